"""Keys, pressed while the input box has focus, as the user meets them."""

from __future__ import annotations

from textual import events

from chat_protocol.names import ROOM_RULE
from chat_protocol.v1 import format_message
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer
from chat_tui.app import ChatApp
from chat_tui.screens.help import KEYS, HelpScreen
from chat_tui.screens.switcher import SwitcherScreen
from chat_tui.widgets.chat_input import ChatInput
from tests.server.wsclients import join
from tests.tui.app_helpers import (
    SIZE,
    in_log,
    input_line,
    joined,
    log_lines,
    make_app,
    room_name,
    screen_lines,
    send,
    sidebar_lines,
    status_line,
    type_text,
    until,
    widget_lines,
)


def active_marker(app: ChatApp) -> str:
    """The active room as the status line shows it."""
    return status_line(app).split(" │ ")[1].removeprefix("#")


def switcher_options(app: ChatApp) -> list[str]:
    rows = widget_lines(app, app.screen.query_one("#switcher-options"), content=True)
    return [row.strip() for row in rows if row.strip()]


async def test_room_switching_keys(shared_server: RunningServer) -> None:
    rooms = [room_name(p) for p in "abc"]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        for room in rooms:
            await joined(pilot, app, room)
        assert app.focused is app.main_screen.input_box
        assert active_marker(app) == rooms[0]
        await pilot.press("alt+down")
        assert active_marker(app) == rooms[1]
        await pilot.press("alt+down", "alt+down")  # wraps around
        assert active_marker(app) == rooms[0]
        await pilot.press("alt+up")
        assert active_marker(app) == rooms[2]
        for number, room in enumerate(rooms, start=1):
            await pilot.press(f"alt+{number}")
            assert active_marker(app) == room
            assert f"#{room}" in status_line(app)
        await pilot.press("alt+9")  # no ninth room: nothing happens
        assert active_marker(app) == rooms[2]
        # The log follows: the join line of the active room is shown.
        assert in_log(app, f"joined {rooms[2]} as")
        assert app.focused is app.main_screen.input_box


async def test_clicking_a_room_switches(shared_server: RunningServer) -> None:
    rooms = [room_name(p) for p in "ab"]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, rooms[1])
        await pilot.click("#sidebar", offset=(4, 1))  # the second row: the second room
        assert active_marker(app) == rooms[1]
        assert app.focused is app.main_screen.input_box


async def test_quick_switcher(shared_server: RunningServer) -> None:
    rooms = [room_name("apple"), room_name("banana")]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, rooms[0])
        await type_text(pilot, "draft")
        await pilot.press("ctrl+k")  # the input's own ctrl+k (delete to end) must not win
        await until(pilot, lambda: isinstance(app.screen, SwitcherScreen), "the switcher")
        assert [line.split()[0] for line in switcher_options(app)] == rooms
        await type_text(pilot, "bana")
        # Matching rooms first (highlighted: enter picks it), then joining the typed name.
        assert switcher_options(app) == [rooms[1], "join bana"]
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, SwitcherScreen), "closed")
        assert active_marker(app) == rooms[1]

        # An invalid name shows the rule; enter does nothing; escape cancels.
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, SwitcherScreen), "the switcher")
        await type_text(pilot, "no/such")
        error = widget_lines(app, app.screen.query_one("#switcher-error"), content=True)
        assert " ".join(line.strip() for line in error) == (
            f"'no/such' cannot be joined: {ROOM_RULE}"
        )
        await pilot.press("enter")
        assert isinstance(app.screen, SwitcherScreen)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SwitcherScreen), "cancelled")
        assert active_marker(app) == rooms[1]

        # A new valid name: enter joins it.
        new = room_name("new")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, SwitcherScreen), "the switcher")
        await type_text(pilot, new)
        assert switcher_options(app) == [f"join {new}"]
        await pilot.press("enter")
        await joined(pilot, app, new)
        assert active_marker(app) == new
        assert [line.split()[2] for line in sidebar_lines(app)] == [*rooms, new]

        await pilot.press("alt+1")
        assert input_line(app) == "draft"


async def test_keys_of_the_main_screen_do_not_act_behind_a_modal(
    shared_server: RunningServer,
) -> None:
    rooms = [room_name(p) for p in "ab"]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, rooms[0])
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("alt+2")
        assert app.controller.active == rooms[0]
        await pilot.press("f1")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def test_history_and_drafts_per_room(shared_server: RunningServer) -> None:
    rooms = [room_name(p) for p in "ab"]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, rooms[0])
        await joined(pilot, app, rooms[1])
        await send(pilot, "first in a")
        await send(pilot, "second in a")
        await type_text(pilot, "unsent a")
        await pilot.press("alt+2")
        assert input_line(app) == "Message, or /help"  # b's (empty) draft: the placeholder
        await send(pilot, "only in b")
        await type_text(pilot, "unsent b")

        await pilot.press("alt+1")
        assert input_line(app) == "unsent a"
        await pilot.press("up")
        assert input_line(app) == "second in a"
        await pilot.press("up")
        assert input_line(app) == "first in a"
        await pilot.press("up")  # the oldest stays
        assert input_line(app) == "first in a"
        await pilot.press("down", "down")  # past the newest: the draft comes back
        assert input_line(app) == "unsent a"

        await pilot.press("alt+2")
        assert input_line(app) == "unsent b"
        await pilot.press("up")
        assert input_line(app) == "only in b"


async def test_tab_completes_names_seen_in_the_room(shared_server: RunningServer) -> None:
    """Tab: the part after "user_" is enough; never our own name; people present first,
    the most recently active first; tab again for the next."""
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        first, second, gone = [await join(shared_server.chat_url(room)) for _ in range(3)]
        try:
            for peer in (first, second, gone):
                await until(pilot, lambda p=peer: in_log(app, f"{p.name} joined"), "a join")
            await gone.close()
            await until(pilot, lambda: in_log(app, f"{gone.name} left"), "the leave")
            await first.ws.send("I spoke last")
            await until(pilot, lambda: in_log(app, "I spoke last"), "the message")

            await type_text(pilot, "hi ")
            await pilot.press("tab")  # nothing typed to complete: nothing happens
            assert input_line(app) == "hi"
            await type_text(pilot, "user_")
            await pilot.press("tab")
            assert input_line(app) == f"hi {first.name}"  # present and the last to speak
            await pilot.press("tab")
            assert input_line(app) == f"hi {second.name}"
            await pilot.press("tab")
            assert input_line(app) == f"hi {gone.name}"  # left: offered last
            await pilot.press("tab")
            assert input_line(app) == f"hi {first.name}"  # round again; never our own name
            assert name not in input_line(app)

            await pilot.press("ctrl+u")
            await type_text(pilot, second.name[5:10])  # the part after "user_" is enough
            await pilot.press("tab")
            assert input_line(app).startswith(f"{second.name}:")
            await pilot.press("ctrl+u")
            await type_text(pilot, "zzz")
            await pilot.press("tab")  # nothing to complete: nothing changes, focus stays
            assert input_line(app) == "zzz"
            assert app.focused is app.main_screen.input_box
        finally:
            for peer in (first, second):
                await peer.close()


async def test_multi_line_paste_is_one_message(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            await type_text(pilot, "look: ")
            # What a terminal delivers for a bracketed paste.
            app.post_message(events.Paste("line one\r\nline two\nline three"))
            await until(pilot, lambda: "⏎" in input_line(app), "the paste")
            assert input_line(app) == "look: line one⏎line two⏎line three"
            await pilot.press("enter")
            frame = await peer.recv()
            assert frame == format_message(name, "look: line one\nline two\nline three")
            await until(pilot, lambda: in_log(app, "line three"), "the message")
            lines = log_lines(app)
            start = next(i for i, line in enumerate(lines) if f"{name} look: line one" in line)
            indent = " " * len(f"12:34 {name} ")
            assert lines[start + 1 : start + 3] == [indent + "line two", indent + "line three"]
            # History gives the whole message back, still on one line with its breaks.
            await pilot.press("up")
            assert input_line(app) == "look: line one⏎line two⏎line three"
        finally:
            await peer.close()


async def test_paste_replaces_the_selection() -> None:
    app = make_app(f"ws://127.0.0.1:{free_port()}", "general")  # no server needed
    async with app.run_test(size=SIZE) as pilot:
        box = app.main_screen.input_box
        await type_text(pilot, "abcdef")
        await pilot.press("shift+left", "shift+left")
        app.post_message(events.Paste("X\nY"))
        await until(pilot, lambda: box.value != "abcdef", "the paste")
        assert box.value == "abcdX⏎Y"
        assert box.message == "abcdX\nY"


async def test_help_lists_every_key(shared_server: RunningServer) -> None:
    listed = " ".join(keys for keys, _ in KEYS)
    for binding in [*ChatApp.BINDINGS, *ChatInput.BINDINGS]:
        for key in binding.key.split(","):  # type: ignore[union-attr]
            if key.startswith("alt+") and key[4:].isdigit():
                assert "alt+1 … alt+9" in listed
            else:
                assert key in listed, key
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        text = "\n".join(screen_lines(app))
        for keys, what in KEYS:
            assert keys in text and what in text
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "closed")
        assert app.focused is app.main_screen.input_box


def test_terminal_alt_digits_arrive_as_alt_keys() -> None:
    """What a terminal sends for alt+2 (ESC "2") must reach the alt+2 binding.

    Pilot's press("alt+2") skips the terminal parser, so this feeds Textual's real parser.
    """
    # Private: Textual has no public way to run its terminal input parser.
    from textual._xterm_parser import XTermParser

    from chat_tui.app import route_alt_digits

    def keys(data: str) -> list[str]:
        parser = XTermParser()
        tokens = [*parser.feed(data), *parser.feed("")]
        return [token.key for token in tokens if isinstance(token, events.Key)]

    route_alt_digits()
    for digit in "123456789":
        assert keys("\x1b" + digit) == [f"alt+{digit}"]
    assert keys("\x1b2x") == ["alt+2", "x"]
    assert keys("\x1b[1;3B") == ["alt+down"]
    assert keys("£") == ["pound_sign"]  # typed characters stay characters


async def test_keys_typed_right_after_enter_stay_for_the_next_message(
    shared_server: RunningServer,
) -> None:
    """A burst as a terminal delivers it (tmux send-keys, fast typing): nothing moves across."""
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            burst = [*"first", "enter", *"second"]
            for key in burst:  # posted at once, as the driver does for one read
                app.post_message(events.Key(key, "\r" if key == "enter" else key))
            frame = await peer.recv()
            assert frame == format_message(name, "first")
            await until(pilot, lambda: input_line(app) == "second", "the next message")
            await pilot.press("enter")
            assert await peer.recv() == format_message(name, "second")
        finally:
            await peer.close()
