"""The server's log: text lines, or with ``--log-format json`` one JSON object per line.

The chat log's lines are written as ``event key=value ...`` (``joined room=%s name=%s``); the
JSON formatter reads that shape back into fields, so every line the server logs that way
becomes ``{"time", "level", "event", "room", "name", "code", "reason", ...}`` with no second
way of logging to keep in step. Other lines (uvicorn's) become ``{"time", "level", "logger",
"event": <the message>}``. Never any message text, at any level (see ``uvicorn_ws.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from typing import Any
from urllib.parse import unquote_plus

from chat_protocol.rates import TokenBucket

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHAT_LOGGER = "chat_server"

_FIELD = re.compile(r"(?:^|\s)([a-z_]+)=")


def structured(fmt: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
    """``event key=value ...`` with ``%s`` placeholders, as fields; None if not that shape."""
    event, _, rest = fmt.partition(" ")
    if "%" in event or "=" in event:
        return None
    matches = list(_FIELD.finditer(rest))
    if rest.strip() and (not matches or rest[: matches[0].start()].strip()):
        return None
    fields: dict[str, Any] = {"event": event}
    remaining = list(args)
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(rest)
        raw = rest[match.end() : end].strip()
        count = raw.count("%s")
        if count != raw.count("%") or count > len(remaining):
            return None
        taken, remaining = remaining[:count], remaining[count:]
        fields[match.group(1)] = taken[0] if raw == "%s" else (raw % tuple(taken) if count else raw)
    return fields if not remaining else None


_QUERY_PARAMETER = re.compile(r"([?&;])([^=&;\s\"']*)=([^&;\s\"']*)")
_SECRET_PARAMETERS = frozenset({"resume", "token"})


def _masked(match: re.Match[str]) -> str:
    # Its name as the server reads it: "%74oken" is "token" too.
    if unquote_plus(match[2]).lower() in _SECRET_PARAMETERS:
        return f"{match[1]}{match[2]}=***"
    return match[0]


def mask_tokens(text: str) -> str:
    """``text`` with the value of any ``resume`` or ``token`` query parameter (however its
    name is written) replaced by ``***``."""
    if "=" not in text:
        return text
    return _QUERY_PARAMETER.sub(_masked, text)


class MaskTokens(logging.Filter):
    """Resume tokens never reach the log: uvicorn's lines show a WebSocket's path with its
    query string (``"WebSocket /chat/general?resume=..." [accepted]``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_tokens(record.msg)
        if isinstance(record.args, tuple) and any(isinstance(a, str) for a in record.args):
            record.args = tuple(mask_tokens(a) if isinstance(a, str) else a for a in record.args)
        return True


def mask_uvicorn_tokens() -> None:
    """Install :class:`MaskTokens` on uvicorn's loggers (idempotent); chat-server and plain
    uvicorn alike."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskTokens) for f in logger.filters):
            logger.addFilter(MaskTokens())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        fields = None
        if record.name == CHAT_LOGGER and isinstance(record.msg, str):
            args = record.args if isinstance(record.args, tuple) else ()
            fields = structured(record.msg, args)
        if fields is None:
            out["logger"] = record.name
            out["event"] = record.getMessage()
        else:
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(
    level: str, log_format: str, log_file: str = "", max_bytes: int = 0, backups: int = 0
) -> None:
    """Logging for ``chat-server run``, to stderr or (``log_file``) to a file rotated by size.
    In text to stderr, uvicorn keeps its own lines' look; otherwise uvicorn is given no
    logging config (see ``serve.py``) and its loggers propagate here."""
    if log_format != "json" and not log_file:
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
        return
    handler: logging.Handler
    if log_file:
        handler = _RotatingLog(log_file, maxBytes=max_bytes, backupCount=backups)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


class _RotatingLog(RotatingFileHandler):
    """A log file rotated by size; the process's own output, if it goes to the same file
    (``chat-server start``), follows it to the new file."""

    def doRollover(self) -> None:
        outputs = [fd for fd in (1, 2) if _same_file(fd, self.baseFilename)]
        super().doRollover()
        if self.stream is not None:
            for fd in outputs:
                os.dup2(self.stream.fileno(), fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


# Lines written once per connection: under churn they are sampled (/metrics counts every one).
CONNECTION_EVENTS = frozenset({"joined", "left", "evicted", "refused"})
REPORT_SECONDS = 10.0


def sample_connection_lines() -> ChurnSampler:
    """Install a :class:`ChurnSampler` on the chat log (once); the caller reports it."""
    logger = logging.getLogger(CHAT_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, ChurnSampler):
            return existing
    sampler = ChurnSampler()
    logger.addFilter(sampler)
    return sampler


async def report_sampled(sampler: ChurnSampler) -> None:
    """Every REPORT_SECONDS, say what the sampler left out."""
    logger = logging.getLogger(CHAT_LOGGER)
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        sampler.report(logger)


class ChurnSampler(logging.Filter):
    """At most ``rate`` per-connection lines a second (``burst`` at once); what is left out is
    counted, by event, and said in one line by :meth:`report`."""

    def __init__(self, rate: float = 20.0, burst: float = 200.0) -> None:
        super().__init__()
        self._bucket = TokenBucket(rate, burst, time.monotonic())
        self.left_out: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING or not isinstance(record.msg, str):
            return True
        event = record.msg.partition(" ")[0]
        if event not in CONNECTION_EVENTS or self._bucket.spend(1, time.monotonic()):
            return True
        self.left_out[event] += 1
        return False

    def report(self, logger: logging.Logger) -> None:
        """Say what was left out since the last report (nothing if nothing was)."""
        if self.left_out:
            counts = " ".join(f"{event}={n}" for event, n in sorted(self.left_out.items()))
            self.left_out.clear()
            logger.warning("sampled left_out=%s", counts)
