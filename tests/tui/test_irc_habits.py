"""A daily user's habits, through the screen: /me, the smart join filter and its key, links
(/links, /open, a click), logs on disk and /grep across rooms and days."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_message
from chat_protocol.v2 import away as v2_away
from chat_protocol.v2 import change_nick as v2_nick
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from chat_tui.app import ChatApp
from chat_tui.logbook import Logbook
from tests.server.wsclients import join, join_v2
from tests.tui.app_helpers import (
    SIZE,
    app_config,
    bells_rung,
    fixed_clock,
    in_log,
    in_log_wrapped,
    joined,
    log_lines,
    log_text,
    room_name,
    screen_lines,
    send,
    until,
)


def app_logging(server: RunningServer, logs: Path, *rooms: str, **options: Any) -> ChatApp:
    # The filter as users have it: these tests read what it hides.
    options.setdefault("joins", "smart")
    config = app_config(server.ws_url, *rooms, **options)
    return ChatApp(config, clock=fixed_clock, logs_root=logs)


async def test_me_and_the_smart_join_filter(shared_server: RunningServer, tmp_path: Path) -> None:
    room = room_name("me")
    app = app_logging(shared_server, tmp_path, room)
    async with app.run_test(size=SIZE) as pilot:
        me = await joined(pilot, app, room)
        quiet = await join(shared_server.chat_url(room))  # joins and never speaks
        talker = await join(shared_server.chat_url(room))
        try:
            await talker.ws.send("hello all")
            await until(pilot, lambda: in_log(app, f"{talker.name} hello all"), "talker's line")
            await talker.close()
            await until(pilot, lambda: in_log(app, f"{talker.name} left"), "the talker's leave")
            # The quiet one's join is hidden; the talker's leave shows (they spoke just now).
            assert not in_log(app, f"{quiet.name} joined")
            await pilot.press("alt+j")
            await until(pilot, lambda: in_log(app, f"{quiet.name} joined"), "hidden lines shown")
            await pilot.press("alt+j")
            await until(pilot, lambda: not in_log(app, f"{quiet.name} joined"), "hidden again")

            # /me: an action, shown "* name text"; on the wire, text any client can read.
            await send(pilot, "/me waves")
            await quiet.recv_until(lambda frame: frame == format_message(me, "/me waves"))
            await until(pilot, lambda: in_log(app, f"* {me} waves"), "the action")
            await quiet.ws.send("/me nods")
            await until(pilot, lambda: in_log(app, f"* {quiet.name} nods"), "their action")
        finally:
            await quiet.close()
    # The log on disk: what was said and the server's notices, day by day, private.
    day_file = next(tmp_path.glob(f"*/{room}/*.log"))
    logged = day_file.read_text()
    assert f"{talker.name} :: hello all" in logged
    assert f"* {me} waves" in logged and f"* {quiet.name} nods" in logged
    assert f"-!- {quiet.name} joined the chat" in logged
    assert stat.S_IMODE(day_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(day_file.parent.stat().st_mode) == 0o700


async def test_links_are_listed_opened_and_clicked(
    shared_server: RunningServer, tmp_path: Path, monkeypatch: Any
) -> None:
    # A browser that writes down what it was asked to open: a real program, run as one.
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {opened}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    room = room_name("links")
    app = app_logging(shared_server, tmp_path / "logs", room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            lookalike = "https://p\u0430ypal.com/login"
            await peer.ws.send("docs: https://example.com/a_(b).")
            await peer.ws.send(f"and {lookalike} and file:///etc/passwd")
            await until(pilot, lambda: in_log(app, "file:///etc/passwd"), "the links said")
            await send(pilot, "/links")
            await until(pilot, lambda: in_log(app, "links here, newest first"), "the list")
            text = log_text(app)
            assert "1. https://p\u0430ypal.com/login" in text
            assert "xn--pypal-4ve.com" in text and "mixed scripts" in text
            assert "2. https://example.com/a_(b)" in text and "3." not in text
            # A link said after the list: /open N still counts as the list shown did.
            await peer.ws.send("new: https://new.example/x")
            await until(pilot, lambda: in_log(app, "new: https://new.example/x"), "a new link")

            await send(pilot, "/open")  # the newest listed: the lookalike, not opened
            await until(
                pilot, lambda: in_log_wrapped(app, "/open 1! opens it anyway"), "the refusal"
            )
            await send(pilot, "/open 2")
            await until(pilot, lambda: opened.exists(), "the browser started")
            wait_until(lambda: opened.read_text() == "https://example.com/a_(b)\n")

            # A click on the link opens it too (the app has the mouse, not the terminal).
            row = next(i for i, line in enumerate(log_lines(app)) if "docs: https" in line)
            column = log_lines(app)[row].index("https://example.com")
            log = app.screen.query_one("#log")
            await pilot.click(log, offset=(column + 3, row))
            wait_until(lambda: opened.read_text().count("https://example.com/a_(b)") == 2)
            # A click on the lookalike opens nothing and says what it is.
            row = next(i for i, line in enumerate(log_lines(app)) if "and https://p" in line)
            column = log_lines(app)[row].index("https://p")
            await pilot.click(log, offset=(column + 3, row))
            said = "not opened: its host is p\u0430ypal.com = xn--pypal-4ve.com"
            await until(pilot, lambda: in_log_wrapped(app, said), "what the lookalike is")
            assert opened.read_text().count("\n") == 2
        finally:
            await peer.close()


async def test_grep_finds_live_and_logged_lines(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    here, there = room_name("g1"), room_name("g2")
    logs = tmp_path / "logs"
    # Last week's log of `there`, written as the app writes them.
    book = Logbook(logs, shared_server.ws_url, on_error=lambda m: None)
    week_ago = datetime.now() - timedelta(days=7)
    book.write(there, week_ago - timedelta(minutes=1), "message", "carol", "before it")
    book.write(there, week_ago, "message", "carol", "the zanzibar plan")
    book.write(there, week_ago + timedelta(minutes=1), "message", "carol", "after it")
    book.close()
    app = app_logging(shared_server, logs, here, there)
    async with app.run_test(size=(120, 40)) as pilot:
        await joined(pilot, app, here)
        await joined(pilot, app, there)
        peer = await join(shared_server.chat_url(there))
        try:
            await peer.ws.send("zanzibar again, today")
            for n in range(30):  # push it up, out of view
                await peer.ws.send(f"filler {n}")
            await until(pilot, lambda: app.controller.rooms[there].unread == 31, "all of it")
            await send(pilot, "/grep Zanzibar")
            title = "2 matches for 'Zanzibar', newest first"
            await until(pilot, lambda: any(title in line for line in screen_lines(app)), title)
            shown = "\n".join(screen_lines(app))
            assert f"#{there} {peer.name} :: zanzibar again, today" in shown
            assert f"{week_ago:%Y-%m-%d} " in shown and "carol :: the zanzibar plan  (log)" in shown

            # The older one is only in the log: the lines around it show.
            await pilot.press("down", "enter")
            # Both lines around it (one screen update may draw one before the other).
            await until(
                pilot,
                lambda: all(
                    said in "\n".join(screen_lines(app))
                    for said in ("carol :: before it", "carol :: after it")
                ),
                "context",
            )
            # The newest is in the scrollback: its room opens at it, picked out by the search.
            await pilot.press("up", "enter")
            await until(pilot, lambda: app.controller.active == there, "its room")
            await until(pilot, lambda: in_log(app, "zanzibar again, today"), "the match in view")
            assert app.screen.search_bar.display
        finally:
            await peer.close()


async def test_logs_that_cannot_be_written_say_so_once(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    blocked = tmp_path / "logs"
    blocked.write_text("a file where the logs directory should be")
    room = room_name("nolog")
    app = app_logging(shared_server, blocked, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            for n in range(3):
                await peer.ws.send(f"line {n}")
            await until(pilot, lambda: in_log(app, "logs are not written"), "the warning")
            await until(pilot, lambda: in_log(app, "line 2"), "the chat goes on")
            assert sum("logs are not written" in line for line in log_lines(app)) == 1
        finally:
            await peer.close()
    assert os.path.isfile(blocked)


async def test_a_first_direct_message_is_logged_and_notifies(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    room = room_name("dmlog")
    app = app_logging(shared_server, tmp_path, room)
    rung = bells_rung(app)
    async with app.run_test(size=SIZE) as pilot:
        me = await joined(pilot, app, room)
        alice = await join_v2(shared_server.chat_url(room_name("dm")), "name=Alice" + room[-6:])
        to_me = await join_v2(
            f"{shared_server.ws_url}/chat/@{me}", join_query(JoinRequest(resume=alice.token))
        )
        try:
            # It opens the conversation, which we had no connection to: the message comes
            # with its welcome, unread, and is what the logs have of it.
            await to_me.send("a private note", "n1")
            conversation = f"@{alice.name}"
            await until(pilot, lambda: len(rung) == 1, "the notification")
            await until(
                pilot, lambda: conversation in app.controller.rooms, "the conversation opened"
            )
        finally:
            await to_me.close()
            await alice.close()
    logged = next(tmp_path.glob(f"*/{conversation}/*.log")).read_text()
    assert f"{alice.name} :: a private note" in logged


async def test_renames_and_away_notices_are_logged(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    """ "X is now known as Y" and "X is away: ..." were on screen only: /grep and the files
    had none of them (found by a new-user run)."""
    room = room_name("notices")
    app = app_logging(shared_server, tmp_path, room, joins="all")
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        other = await join_v2(shared_server.chat_url(room))
        new = "Nia" + room[-6:]
        try:
            await other.ws.send(v2_nick(new))
            await until(pilot, lambda: in_log(app, f"{other.name} is now known as {new}"), "nick")
            await other.ws.send(v2_away("lunch time"))
            await until(pilot, lambda: in_log(app, f"{new} is away: lunch time"), "away")
        finally:
            await other.close()
    logged = next(tmp_path.glob(f"*/{room}/*.log")).read_text()
    assert f"{other.name} is now known as {new}" in logged, logged
    assert f"{new} is away: lunch time" in logged, logged
