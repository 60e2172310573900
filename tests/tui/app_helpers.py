"""Helpers for Pilot tests of ChatApp: read what is on screen, wait for conditions."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.segment import Segment
from textual.pilot import Pilot
from textual.widget import Widget

from chat_testing.servers import RunningServer
from chat_tui.app import ChatApp
from chat_tui.config import Config

SIZE = (100, 30)
TIMEOUT = 15.0
FIXED_NOW = datetime(2024, 5, 17, 12, 34)


def fixed_clock() -> datetime:
    return FIXED_NOW


class MaxRandom(random.Random):
    """Backoff without jitter: every wait is the full step."""

    def uniform(self, a: float, b: float) -> float:
        return b


def room_name(prefix: str = "t") -> str:
    """A room no other test uses (the shared server is shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def app_config(url: str, *rooms: str, **options: Any) -> Config:
    """The config of the tests' apps: no local server started, every join and leave in the
    log as the tests read them (the smart filter has tests of its own), and the bell whatever
    terminal runs the tests; ``options`` win."""
    options.setdefault("autostart", False)
    options.setdefault("joins", "all")
    options.setdefault("notifications", "bell")
    return Config(server=url, rooms=list(rooms), **options)


def make_app(server: RunningServer | str, *rooms: str, **options: Any) -> ChatApp:
    url = server if isinstance(server, str) else server.ws_url
    return ChatApp(app_config(url, *rooms, **options), clock=fixed_clock)


async def until(
    pilot: Pilot[Any], condition: Callable[[], Any], what: str, timeout: float = TIMEOUT
) -> Any:
    """Let the app run until ``condition()`` is truthy; fail with ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        # Every message queued so far handled, then laid out and painted: a frame a terminal
        # is shown. Read straight after a sleep, the screen can hold a widget's new content in
        # the last layout's regions (a list grown by one row, its last row cut off), a frame
        # no terminal ever shows, since Textual lays out before it paints.
        await pilot.pause()
        value = condition()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


# --- reading the screen ---------------------------------------------------------------------


def screen_lines(app: Any) -> list[str]:
    """The whole screen as text rows, as the terminal would show it.

    The compositor's output: every widget's rows as Textual's caches hold them, which is what
    reaches the terminal (``render_line`` called by hand would bypass those caches).
    """
    # Private: Textual has no public way to read the composed screen as text.
    return [strip.text for strip in app.screen._compositor.render_strips()]


def screen_segments(app: Any, widget: Widget, row: int) -> list[Segment]:
    """The segments of ``row`` of ``widget``'s content region, cut to its columns."""
    region = widget.scrollable_content_region
    # Private: Textual has no public way to read the composed screen's styles.
    strip = app.screen._compositor.render_strips()[region.y + row]
    return list(strip.crop(region.x, region.right))


def style_at(app: Any, widget: Widget, row: int, text: str) -> Any:
    """The style of the cells showing ``text`` on ``row`` of ``widget``, as composed."""
    column = 0
    for segment in screen_segments(app, widget, row):
        if text in segment.text:
            return segment.style
        column += len(segment.text)
    raise AssertionError(f"{text!r} not in one segment of row {row}")


def widget_lines(app: Any, widget: Widget, *, content: bool = False) -> list[str]:
    """The rows of the screen covered by ``widget``, cut to its columns.

    ``content``: only its content region (no border, padding or scrollbars).
    """
    region = widget.scrollable_content_region if content else widget.region
    rows = screen_lines(app)[region.y : region.bottom]
    return [row[region.x : region.right].rstrip() for row in rows]


def log_lines(app: ChatApp) -> list[str]:
    """The rows of the log as shown, without the scrollbar (none before the screen is up)."""
    log = app.query("#log")
    return widget_lines(app, log.first(), content=True) if log else []


def log_text(app: ChatApp) -> str:
    return "\n".join(log_lines(app))


def sidebar_lines(app: ChatApp) -> list[str]:
    rows = widget_lines(app, app.query_one("#sidebar"), content=True)
    return [line.strip() for line in rows if line.strip()]


def sidebar_line(app: ChatApp, room: str) -> str:
    for line in sidebar_lines(app):
        words = line.split()
        if len(words) >= 3 and words[2] == room:
            return line
    raise AssertionError(f"{room} not in the sidebar: {sidebar_lines(app)}")


def status_line(app: ChatApp) -> str:
    return widget_lines(app, app.query_one("#status"))[0].strip()


def members_lines(app: ChatApp) -> list[str]:
    panel = app.query_one("#members")
    if not panel.display or panel.region.width == 0:
        return []
    return [line.strip() for line in widget_lines(app, panel, content=True) if line.strip()]


def unseen_line(app: ChatApp) -> str:
    widget = app.query_one("#unseen")
    if not widget.display or widget.region.height == 0:
        return ""
    return widget_lines(app, widget)[0].strip()


def input_line(app: ChatApp) -> str:
    """The text row of the input box (inside its border)."""
    return widget_lines(app, app.query_one("#input"))[1].strip(" ▊▎")


_TIME = re.compile(r"\[?\d\d:\d\d(:\d\d)?\]? ")


def untimed(line: str) -> str:
    """A log row without its leading time (messages show the server's time on chat.v2)."""
    match = _TIME.match(line)
    assert match is not None, f"no time at the start of {line!r}"
    return line[match.end() :]


def in_log(app: ChatApp, text: str) -> bool:
    return any(text in line for line in log_lines(app))


def in_log_wrapped(app: ChatApp, text: str) -> bool:
    """``text`` is in the log, maybe wrapped over several rows (at its spaces)."""
    return text in " ".join(line.strip() for line in log_lines(app))


async def joined(pilot: Pilot[Any], app: ChatApp, room: str, timeout: float = TIMEOUT) -> str:
    """Wait until ``room`` is connected and our name there is known, and the screen has caught
    up with that (the log shows "joined ROOM as NAME" when the room is in view); returns the
    name."""

    def name() -> str | None:
        rs = app.controller.rooms.get(room)
        return rs.me if rs is not None and rs.state.value == "connected" else None

    result: str = await until(pilot, name, f"joining {room}", timeout)
    await pilot.pause()  # the app has handled what it was woken for, and repainted
    return result


def bells_rung(app: Any) -> list[None]:
    """The bells ``app`` rings from now on, one item each.

    Textual's ``App.bell()`` is what writes BEL to a terminal, and a headless app has none to
    write to: its calls are counted instead.
    """
    rung: list[None] = []
    ring = app.bell

    def bell() -> None:
        rung.append(None)
        ring()

    app.bell = bell
    return rung


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*text)


def terminal_keys(app: Any, data: str) -> None:
    """Post what a terminal sends in one read (``data``), parsed as Textual's driver does.

    Pilot's ``press`` hands over one key at a time and waits in between; a terminal delivers
    a burst (fast typing, ``tmux send-keys``, a paste without bracketed paste) in one read.
    """
    # Private: Textual has no public way to feed raw terminal input to an app.
    from textual._xterm_parser import XTermParser

    parser = XTermParser()
    for token in [*parser.feed(data), *parser.feed("")]:
        app.post_message(token)


async def send(pilot: Pilot[Any], text: str) -> None:
    await type_text(pilot, text)
    await pilot.press("enter")
