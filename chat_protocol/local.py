"""A local server as a program starts and stops it: what ``chat-server start``, ``stop`` and
``status`` print with ``--json`` (one object on one line), so that a client that starts a
server for its user (``chat-tui``'s autostart) reads what happened as a value."""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class State(StrEnum):
    STARTED = "started"  # start: a server was started now
    RUNNING = "running"  # start, status: one was running already
    NOT_RUNNING = "not running"  # stop, status
    STOPPED = "stopped"  # stop
    NOT_OURS = "not ours"  # stop: a server runs there that start did not start
    UNKNOWN = "unknown"  # status: a process holds the pid file but does not answer
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    state: State
    url: str  # where the server answers (http://HOST:PORT)
    message: str  # what the command would have printed, for a person
    pid: int | None = None
    log: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "url": self.url,
            "message": self.message,
            "pid": self.pid,
            "log": self.log,
        }

    @classmethod
    def read(cls, line: str) -> Outcome:
        """One printed object; raises ValueError if it is not one."""
        body = json.loads(line)
        try:
            return cls(
                State(body["state"]),
                str(body["url"]),
                str(body["message"]),
                None if body.get("pid") is None else int(body["pid"]),
                None if body.get("log") is None else str(body["log"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an outcome: {line[:80]!r}") from exc


def version() -> str:
    """The installed package's version (both commands' ``--version``)."""
    try:
        return importlib.metadata.version("terminal-chat")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout not installed
        return "unknown"
