"""Programs in real terminals: a private tmux server each, its one pane read as text.

Each :class:`Tmux` is a tmux server of its own (its own socket, in ``$TMUX_TMPDIR`` or /tmp),
without the user's tmux config, with a config and state directory of its own for the program,
so that side-by-side runs never share a terminal, a config file or a kept name.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from chat_testing.waits import wait_until

WIDTH, HEIGHT = 120, 40
# Generous: one tmux command, or one change to a pane, on a busy 2-core machine.
STEP = 20.0
MODE_FLAGS = ("alternate_on", "cursor_flag", "mouse_any_flag", "mouse_sgr_flag")


class Tmux:
    """One tmux server on a private socket, holding the pane that runs the program.

    ``home``: the program's config (``home/config``) and state (``home/state``) directories.
    """

    def __init__(self, home: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.socket = f"chat-e2e-{uuid.uuid4().hex[:12]}"  # parallel runs must not share one
        self.target = "chat"
        self.size = (width, height)
        # No user tmux config; keep the pane after the program exits to read its exit status.
        self.conf = home / "tmux.conf"
        self.conf.write_text("set-option -g remain-on-exit on\n")
        # The tmux server, and so the program, gets this environment. Built from os.environ on
        # purpose: with env=None a child inherits the C-level environment, where GNU readline
        # (loaded by the test process) puts COLUMNS=80 and LINES=24, and the program would draw
        # an 80x24 screen in a 120x40 pane. No config file of the user's, no server from the
        # environment, and not nested in a tmux the tests may be running in.
        skip = {"COLUMNS", "LINES", "TMUX", "TMUX_PANE", "CHAT_SERVER_URL"}
        self.env = {k: v for k, v in os.environ.items() if k not in skip}
        self.env.update(
            TERM="xterm-256color",
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_STATE_HOME=str(home / "state"),
            XDG_DATA_HOME=str(home / "data"),
        )
        self.home = home

    def configure(self, toml: str) -> None:
        """The program's config file (chat-tui's), before it starts."""
        path = self.home / "config" / "chat-tui" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(toml)

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=STEP,
            check=True,
            env=self.env,
        )
        return result.stdout

    def start(self, command: list[str]) -> None:
        # TERM again inside: tmux puts its own (tmux-256color) in the pane's environment.
        command = ["env", f"TERM={self.env['TERM']}", *command]
        width, height = self.size
        self.run(
            "new-session", "-d", "-s", self.target, "-x", str(width), "-y", str(height),
            shlex.join(command),
        )  # fmt: skip

    def lines(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", self.target).splitlines()

    def screen(self) -> str:
        return "\n".join(self.lines())

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", self.target, *(["-l"] if literal else []), *keys)

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", self.target, fmt).strip()

    def exit_status(self) -> str | None:
        """The exit status once the pane's process is dead and reaped, else None."""
        dead, _, status = self.pane("#{pane_dead}|#{pane_dead_status}").partition("|")
        if dead == "1" and not status:
            # tmux marks the pane dead on EOF and records the status when it reaps the
            # process. Under load tmux 3.3 was seen to miss that SIGCHLD for good (the pane's
            # process stayed a zombie); a job of its own ending makes it reap every child.
            self.run("run-shell", "true")
        return status if dead == "1" and status else None

    def modes(self) -> dict[str, str]:
        """Terminal modes of the pane's program (tmux resets them once the pane is dead)."""
        return {flag: self.pane(f"#{{{flag}}}") for flag in MODE_FLAGS}

    def wait_for(self, condition: Callable[[str], object], what: str, timeout: float = STEP) -> str:
        """Poll the pane until ``condition(screen)`` holds; the failure shows the screen."""
        last = ""

        def check() -> object:
            nonlocal last
            last = self.screen()
            return condition(last)

        try:
            wait_until(check, timeout=timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- pane ---\n{last}") from None
        return last

    def kill(self) -> None:
        where = subprocess.run(
            ["tmux", "-L", self.socket, "display-message", "-p", "#{socket_path}"],
            capture_output=True,
            text=True,
            timeout=10,
            env=self.env,
        )
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"],
            capture_output=True,
            timeout=10,
            env=self.env,
        )
        if where.returncode == 0 and where.stdout.strip():
            Path(where.stdout.strip()).unlink(missing_ok=True)  # tmux leaves it behind


@contextmanager
def two_terminals(directory: Path) -> Iterator[tuple[Tmux, Tmux]]:
    """Two private tmux servers (two users), each with a home of its own under ``directory``."""
    for name in ("a", "b"):
        (directory / name).mkdir()
    first, second = Tmux(directory / "a"), Tmux(directory / "b")
    try:
        yield first, second
    finally:
        first.kill()
        second.kill()
