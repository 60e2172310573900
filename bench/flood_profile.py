"""Profile chat-tui (in tmux, as bench/client_bench.py runs it) while it takes a flood.

    python bench/flood_profile.py [--messages 20000] [--out /tmp/flood.txt]
    python bench/flood_profile.py --no-spy [--ab CHECKOUT | --patch FILE] [--repeats 5]

Runs ``py-spy record --format raw`` (collapsed stacks) on the chat-tui process from "go" until
the flood's last message is on screen, and prints the functions with the most samples
(own time and total time). A tool for finding where the time goes, not a benchmark. With
``--ab`` or ``--patch``, this chat-tui and another take turns on the same flood (pairs), and
the medians of the probe's figures are printed.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from client_bench import Sender, Terminal, final_text, shows

from chat_testing.servers import start_server

ROOT = Path(__file__).resolve().parent.parent


def summarise(path: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    out = [f"{samples} samples", "", "own:"]
    out += [f"{n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "total:"]
    out += [f"{n / samples:6.1%}  {f}" for f, n in total.most_common(top * 2)]
    return "\n".join(out)


def ab(args: argparse.Namespace) -> int:
    """This chat-tui and CHECKOUT's (or this one with ``--patch`` run first), taking turns:
    medians of the probe's figures."""
    import os
    import statistics

    server = start_server(rate_limit=0, send_buffer=256 * 2**20, log_level="warning")
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "theirs": []}
    try:
        for repeat in range(args.repeats):
            for name in ("ours", "theirs") if repeat % 2 == 0 else ("theirs", "ours"):
                checkout = args.ab if name == "theirs" else args.ours
                room = f"ab-{uuid.uuid4().hex[:6]}"
                # A patch (bench/tui_probe.py's $CHAT_TUI_PATCH) reaches the program through
                # the environment its terminal is given.
                os.environ.pop("CHAT_TUI_PATCH", None)
                if name == "theirs" and args.patch:
                    os.environ["CHAT_TUI_PATCH"] = str(args.patch.resolve())
                term = Terminal(
                    server.ws_url, [room], args.scrollback, checkout, config=args.config
                )
                os.environ.pop("CHAT_TUI_PATCH", None)
                try:
                    term.wait(shows(f"joined {room} as"), 60, "joining")
                    sender = Sender(server.ws_url, [room], args.messages)
                    term.wait(shows("members (2)"), 30, "the sender's join")
                    term.measure()
                    start = sender.go()
                    done = term.wait(shows(final_text(args.messages)), 300, "the last message")
                    probe = term.measure()
                    probe["time"] = done - start
                    sender.finish()
                finally:
                    term.close()
                runs[name].append(probe)
                print(
                    f"{repeat}: {name:6} time {probe['time']:.3f} s  cpu {probe['cpu']:.3f} s  "
                    f"stall {probe['stall'] * 1000:5.1f} ms  gc {probe['gc_worst'] * 1000:5.1f} ms",
                    file=sys.stderr,
                )
    finally:
        server.stop()
    for key in ("time", "cpu", "stall", "gc_worst"):
        ours = [r[key] for r in runs["ours"]]
        theirs = [r[key] for r in runs["theirs"]]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"{key:8}: ours {statistics.median(ours):.4f} (worst {max(ours):.4f}), theirs "
            f"{statistics.median(theirs):.4f} (worst {max(theirs):.4f}), "
            f"pairs' ratio {statistics.median(ratios):.2f}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flood.txt"))
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--scrollback", type=int, default=None)
    parser.add_argument("--config", default="", help="lines for chat-tui's config.toml")
    parser.add_argument("--no-spy", action="store_true", help="only the probe's figures")
    parser.add_argument("--ab", type=Path, metavar="CHECKOUT", help="compare with CHECKOUT's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ours", type=Path, metavar="CHECKOUT", help="with --ab: instead of ours")
    parser.add_argument(
        "--patch",
        type=Path,
        metavar="FILE",
        help="compare with this chat-tui with FILE's Python run first ($CHAT_TUI_PATCH): a "
        "change tried, or one switched off, without a copy",
    )
    args = parser.parse_args()
    if args.ab or args.patch:
        return ab(args)
    server = start_server(rate_limit=0, send_buffer=256 * 2**20, log_level="warning")
    room = f"prof-{uuid.uuid4().hex[:6]}"
    try:
        term = Terminal(server.ws_url, [room], args.scrollback, config=args.config)
        try:
            term.wait(shows(f"joined {room} as"), 60, "joining")
            sender = Sender(server.ws_url, [room], args.messages)
            term.wait(shows("members (2)"), 30, "the sender's join")
            spy = None if args.no_spy else subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--gil",
                 "-r", "250", "-o", str(args.out), "--pid", str(term.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
            term.measure()
            start = sender.go()
            done = term.wait(shows(final_text(args.messages)), 300, "the last message")
            print(f"flood shown after {done - start:.3f} s: {term.measure()}", file=sys.stderr)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            sender.finish()
        finally:
            term.close()
    finally:
        server.stop()
    if not args.no_spy:
        print(summarise(args.out, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
