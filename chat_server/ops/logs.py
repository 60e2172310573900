"""The server's log: text lines, or with ``--log-format json`` one JSON object per line.

The chat log's lines are written as ``event key=value ...`` (``joined room=%s name=%s``); the
JSON formatter reads that shape back into fields, so every line the server logs that way
becomes ``{"time", "level", "event", "room", "name", "code", "reason", ...}`` with no second
way of logging to keep in step. Other lines (uvicorn's) become ``{"time", "level", "logger",
"event": <the message>}``. Never any message text, at any level (see ``uvicorn_ws.py``).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

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


_TOKEN_IN_QUERY = re.compile(r"(resume=)[^&\s\"']*")


def mask_tokens(text: str) -> str:
    """``text`` with any ``resume=`` query parameter's value replaced by ``***``."""
    return _TOKEN_IN_QUERY.sub(r"\1***", text) if "resume=" in text else text


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


def configure(level: str, log_format: str) -> None:
    """Logging for ``chat-server run``. In text, uvicorn keeps its own lines' look; in JSON,
    uvicorn is given no logging config (see ``serve.py``) and its loggers propagate here."""
    if log_format != "json":
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
