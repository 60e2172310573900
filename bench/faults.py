"""The fault table: run the fault suite (``pytest -m fault``) and tabulate what each probe saw.

The probes are the tests marked ``fault`` (tests/server/test_hostile_*.py, test_scale.py);
each records its outcome and figures (server RSS before and after, server CPU, the healthy
pair's p99 latency). CI runs them as part of the test suite with a 12-second soak and 6,000
churn cycles (the table: 20,000). Here::

    python bench/faults.py                       # this checkout, 1-minute soak (CI: 12 s)
    python bench/faults.py --soak 600            # the full ten-minute soak
    python bench/faults.py --server-root ../main # the same probes against another checkout
    python bench/faults.py -k flood              # a subset (pytest -k)

``--server-root`` runs that checkout's server (its directory first on PYTHONPATH) under this
checkout's probes: how "before" was measured. Probes whose assertions fail still report what
they saw; the exit code is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace) -> tuple[int, list[dict]]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as report:
        path = Path(report.name)
    env = dict(
        os.environ,
        CHAT_FAULT_REPORT=str(path),
        CHAT_SOAK_SECONDS=str(args.soak),
        CHAT_CHURN_CYCLES="20000",  # the table's figures (CI runs 3,000 and 5,000)
        CHAT_IDLE_CONNECTIONS="10000",
    )
    if args.server_root:
        env["CHAT_TEST_SERVER_ROOT"] = str(Path(args.server_root).resolve())
    command = [sys.executable, "-m", "pytest", "-m", "fault", "-q", "-p", "no:cacheprovider"]
    command += ["-n", "0"]  # one probe at a time: the suite's parallel workers would skew figures
    command += ["--timeout", str(int(max(120, args.soak + 120)))]  # the soak is one test
    if args.k:
        command += ["-k", args.k]
    code = subprocess.call(command, cwd=ROOT, env=env)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.unlink()
    return code, rows


def table(rows: list[dict]) -> str:
    out = [
        "| probe | outcome | RSS before -> after (MiB) | server CPU (s) | observer p99 (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["probe"] == "soak":
            continue
        rss = f"{row['rss_before_mb']} -> {row['rss_after_mb']}" if "rss_before_mb" in row else ""
        out.append(
            f"| {row['probe']} | {row['outcome']} | {rss} | {row.get('cpu_s', '')} "
            f"| {row.get('observer_p99_ms', '')} |"
        )
    for row in rows:
        if row["probe"] == "soak":
            out += ["", f"Soak: {row['outcome']}", ""]
            out += [f"    {line}" for line in row.get("lines", [])]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, default=60, help="soak seconds (default 60)")
    parser.add_argument("--server-root", help="run this checkout's server instead")
    parser.add_argument("-k", help="only the probes matching this pytest -k expression")
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args()
    code, rows = run(args)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    sys.exit(code)


if __name__ == "__main__":
    main()
