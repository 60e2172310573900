"""How long searching a year of logs takes (chat_tui.grep.search_logs).

    python bench/grep_bench.py [--lines 1000000] [--days 365] [--rooms 3] [--repeats 5]

Writes ``--lines`` log lines in the logbook's own format (chat_tui.logbook.format_entry) into
a temporary directory: ``--days`` days of ``--rooms`` rooms, a file per room and day (the
default is a year, about 80 MB). Then, median of ``--repeats`` runs (the files are in the page
cache after the first, as they are for a user who searches twice):

* **rare**: a word in 3 entries, the oldest a year ago (every file is read);
* **common**: a word in most entries (the limit of 200 is reached on the newest day);
* **none**: a word in no entry (the worst case: every byte is scanned);
* **non-ascii**: "Café" (decoded, Unicode lower case), in 3 entries;
* **stamp-like**: "12:3" (in every time stamp, which does not count: every line is rejected).

It checks the hits of the rare word too (newest first, at the line numbers planted).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from chat_tui.grep import Hit, search_logs
from chat_tui.logbook import format_entry, room_dirname, server_dirname

SERVER = "ws://127.0.0.1:8000"
_VOCABULARY = (
    "the a of to and is it in that you for on this with we was are be have not but what "
    "all were when there can an your which their said if do will each about how up out "
    "them then she many some so these would other into has more her two like him see time "
    "could no make than first been its who now people my made over did down only way find "
    "use may water long little very after words called just where most know get through "
    "back much go good new write our me man too any day same right look think also around "
    "another came come work"
)
WORDS = _VOCABULARY.split()
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
RARE, NON_ASCII = "zanzibar", "Café"


def bodies(rng: random.Random, count: int) -> list[str]:
    """``count`` entries as the logbook writes them, without their "HH:MM:SS " (added per line)."""
    midnight = datetime(2000, 1, 1)
    out = []
    for _ in range(count):
        roll = rng.random()
        words = " ".join(rng.choices(WORDS, k=rng.randint(5, 20)))
        if roll < 0.85:
            entry = format_entry(midnight, "message", rng.choice(NAMES), words)
        elif roll < 0.90:
            entry = format_entry(midnight, "action", rng.choice(NAMES), words)
        elif roll < 0.97:
            entry = format_entry(midnight, "notice", None, f"{rng.choice(NAMES)} joined")
        else:  # multi-line: the continuation lines are lines too
            entry = format_entry(midnight, "message", rng.choice(NAMES), words + "\n" + words)
        out.append(entry[len("00:00:00 ") :])
    return out


def write_logs(
    root: Path, *, lines: int, days: int, rooms: int, seed: int = 1
) -> tuple[list[Hit], int]:
    """A year of logs; returns the planted hits of RARE, newest first, and the lines written.

    Planted: RARE and NON_ASCII on the oldest day, a middle day and the newest day, each in
    the last room, as the fifth entry of the file.
    """
    rng = random.Random(seed)
    pool = bodies(rng, 5000)
    stamps = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} " for s in range(86400)]
    per_file = max(lines // (days * rooms), 1)
    server_dir = root / server_dirname(SERVER)
    first = date(2024, 1, 1)
    planted_days = {0, days // 2, days - 1}
    planted: list[Hit] = []
    written = 0
    for room_index in range(rooms):
        room = f"room-{room_index}"
        folder = server_dir / room_dirname(room)
        folder.mkdir(parents=True)
        for day_index in range(days):
            day = first + timedelta(days=day_index)
            chosen = rng.choices(pool, k=per_file)
            if room_index == rooms - 1 and day_index in planted_days:
                chosen[4] = f"alice :: we sail to {RARE} at dawn\n"
                chosen[5] = f"bob :: a {NON_ASCII} in Lisbon? no, in Paris\n"
            parts = [stamps[i * 86400 // per_file] + body for i, body in enumerate(chosen)]
            text = "".join(parts)
            path = folder / f"{day:%Y-%m-%d}.log"
            path.write_text(text, encoding="utf-8")
            written += text.count("\n")
            if room_index == rooms - 1 and day_index in planted_days:
                line = "".join(parts[:4]).count("\n") + 1
                when = datetime.combine(day, datetime.min.time()) + timedelta(
                    seconds=4 * 86400 // per_file
                )
                planted.append(
                    Hit(
                        room=room,
                        when=when,
                        sender="alice",
                        text=f"we sail to {RARE} at dawn",
                        source="log",
                        path=path,
                        line_number=line,
                        kind="message",
                        server=server_dirname(SERVER),
                    )
                )
    planted.reverse()  # newest first
    return planted, written


def median_time(root: Path, query: str, repeats: int) -> tuple[float, int]:
    times = []
    found = 0
    for _ in range(repeats):
        started = time.perf_counter()
        found = len(search_logs(root, None, query))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rooms", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        started = time.perf_counter()
        planted, written = write_logs(root, lines=args.lines, days=args.days, rooms=args.rooms)
        size = sum(p.stat().st_size for p in root.rglob("*.log"))
        print(
            f"{written:,} lines, {size / 1e6:.1f} MB in {args.days * args.rooms} files "
            f"(written in {time.perf_counter() - started:.1f} s)"
        )
        hits = search_logs(root, None, RARE.upper())
        if hits != planted:
            print(f"wrong hits for {RARE!r}: {hits!r}\nexpected {planted!r}", file=sys.stderr)
            return 1
        for label, query in (
            ("rare", RARE),
            ("common", "the"),
            ("none", "qwertyuiop"),
            ("non-ascii", NON_ASCII.lower()),
            ("stamp-like", "12:3"),
        ):
            seconds, found = median_time(root, query, args.repeats)
            print(f"{label:>11} {query!r:>14}: {seconds * 1000:7.1f} ms median, {found} hits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
