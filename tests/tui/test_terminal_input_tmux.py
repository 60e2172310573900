"""Input as a real terminal delivers it (tmux): pastes that carry escape bytes, and keys that
arrive in one read with ``ctrl+f``.

Both defects live between the terminal and the widgets, where Pilot tests cannot reach: Pilot
posts key and paste events, a terminal sends bytes that Textual's parser must split into them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from chat_protocol.v1 import format_message
from chat_testing.servers import RunningServer
from chat_testing.tmux import Tmux
from tests.tui.peers import join_peer, recv_until
from tests.tui.tmux_screen import CHAT_TUI, JOINED, STARTUP, input_row, status_row

pytestmark = [
    pytest.mark.skipif(
        shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux is not installed"
    ),
    pytest.mark.skipif(not CHAT_TUI.exists(), reason="chat-tui is not installed"),
]

EMPTY_INPUT = "Message, or /help"
SEARCH_PLACEHOLDER = "text to find in this room"


def start(tmux: Tmux, server: RunningServer) -> tuple[str, str]:
    """chat-tui in a room of its own, joined: the room and our name."""
    room = f"input-{uuid.uuid4().hex[:8]}"
    tmux.start([str(CHAT_TUI), "--server", server.ws_url, "--no-autostart", room])
    screen = tmux.wait_for(
        lambda s: (m := JOINED.search(s)) is not None and m.group(1) == room,
        f"joining {room}",
        timeout=STARTUP,
    )
    match = JOINED.search(screen)
    assert match is not None
    return room, match.group(2)


def paste(tmux: Tmux, data: bytes, *, bracketed: bool) -> None:
    """Paste ``data`` as tmux does: ``-p`` wraps it in bracketed-paste markers when the program
    asked for them (Textual does), without ``-p`` the bytes come as if typed."""
    buffer = Path(tmux.conf).parent / f"paste-{uuid.uuid4().hex[:8]}"
    buffer.write_bytes(data)
    tmux.run("load-buffer", str(buffer))
    tmux.run("paste-buffer", *(["-p"] if bracketed else []), "-t", tmux.target)


def input_text(screen: str) -> str:
    """What the input box shows (its row between the box's side bars)."""
    return input_row(screen).strip().strip("▕▊▎▏").strip()


def search_row(screen: str) -> str:
    return next((row for row in screen.splitlines() if " search: " in row), "")


def search_query(screen: str) -> str:
    """The first word in the search field ("text" of its placeholder when it is empty)."""
    words = search_row(screen).partition("search:")[2].split()
    return words[0] if words else ""


def test_a_bracketed_paste_with_escape_bytes_goes_in_at_the_cursor_in_order(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """``one ESC two`` showed as ``^twoone``: Textual's parser took the bytes after a pasted ESC
    for an escape sequence and sent them as keys, ahead of the rest of the paste. Now escape
    sequences (colours) are dropped, a lone ESC shows as "␛", a tab becomes spaces (to its tab
    stop, 4 apart, as the log shows a tab), and the text goes in at the cursor, in order."""
    room, name = start(tmux, shared_server)
    with join_peer(shared_server, room) as (peer, _):
        # A lone ESC, into an empty box.
        paste(tmux, b"one\033two", bracketed=True)
        tmux.wait_for(lambda s: input_text(s) == "one\u241btwo", "the paste, ESC as a symbol")
        tmux.keys("Enter")
        recv_until(peer, format_message(name, "one\u241btwo"))
        tmux.wait_for(lambda s: EMPTY_INPUT in input_row(s), "an empty input")

        # Colours and a tab, pasted between two typed letters.
        tmux.keys("AB", literal=True)
        tmux.keys("Left")
        paste(tmux, b"pasted \033[31mred\033[0m text and a tab:\there", bracketed=True)
        wanted = "Apasted red text and a tab:  hereB"
        tmux.wait_for(lambda s: input_text(s) == wanted, "the paste at the cursor, in order")
        tmux.keys("C", literal=True)  # the cursor is after the pasted text
        tmux.wait_for(lambda s: input_text(s) == wanted[:-1] + "CB", "a key typed after it")
        tmux.keys("Enter")
        recv_until(peer, format_message(name, wanted[:-1] + "CB"))


def test_an_unbracketed_paste_with_escape_bytes_arrives_as_keys_in_order(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """Without bracketed paste the bytes are keys: colour sequences are keys nobody bound (so
    nothing), a carriage return is enter. The text keeps its order and nothing raw is sent."""
    room, name = start(tmux, shared_server)
    with join_peer(shared_server, room) as (peer, _):
        paste(tmux, b"pasted \033[31mred\033[0m text\rsecond line\r", bracketed=False)
        recv_until(peer, format_message(name, "pasted red text"))
        recv_until(peer, format_message(name, "second line"))
        tmux.wait_for(lambda s: EMPTY_INPUT in input_row(s), "an empty input")


def test_keys_in_the_same_read_as_ctrl_f_go_to_the_search_field(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """``send-keys C-f abc`` (one write) put "abc" in the message box: the search field got the
    focus only after the keys behind ctrl+f had been handed to the message box. Likewise the
    keys after enter in the field went into the query, and backspace or left in the field ran
    after the keys that followed them."""
    start(tmux, shared_server)
    tmux.keys("draft", literal=True)
    tmux.wait_for(lambda s: input_text(s) == "draft", "the draft")
    tmux.keys("C-f", "abc")
    screen = tmux.wait_for(lambda s: search_query(s) == "abc", "abc in the search field")
    assert input_text(screen) == "draft", screen
    # Again after escape, with editing keys in the same read: they keep their order.
    tmux.keys("Escape")
    tmux.wait_for(lambda s: not search_row(s), "the search closed")
    tmux.keys("C-f", "xyz", "BSpace", "Z")  # backspace took the Z typed after it
    tmux.wait_for(lambda s: search_query(s) == "xyZ", "xyZ in the search field")
    # Enter leaves the field for the matches: n and N after it step through them, and are not
    # typed into the query (they were). ctrl+f back in the field selects the query (as it does
    # coming from the message box), so q after it replaces it; typed into a field that kept the
    # focus it would follow "xyZnN".
    tmux.keys("Enter", "n", "N", "C-f", "q")
    screen = tmux.wait_for(lambda s: "q" in search_query(s), "q in the search field")
    assert search_query(screen) == "q", screen
    assert input_text(screen) == "draft", screen


def test_keys_in_the_same_read_as_the_switchers_enter_go_to_the_chosen_room(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """``send-keys C-k ROOM Enter hello Enter`` (one write): the second enter reached the
    switcher after it had gone and the app crashed ("Can't pop screen"); the keys after the
    first enter belong to the room chosen, in order."""
    room, _ = start(tmux, shared_server)
    other = f"input-{uuid.uuid4().hex[:8]}"
    tmux.keys("C-k", other, "Enter")
    tmux.wait_for(lambda s: f"joined {other} as" in s, f"joined {other}", timeout=STARTUP)
    tmux.keys("C-k", room, "Enter", "hello from a burst", "Enter")
    screen = tmux.wait_for(lambda s: "hello from a burst" in s, "the line sent")
    assert tmux.exit_status() is None, screen
    assert f"#{room} " in status_row(screen), screen
    assert input_text(screen) == EMPTY_INPUT, screen
    tmux.keys("C-k", other, "Enter", "Enter")  # the crash of the second enter
    screen = tmux.wait_for(lambda s: f"#{other} " in status_row(s), f"back in {other}")
    assert tmux.exit_status() is None, screen
    assert "hello from a burst" not in screen, screen  # the line was said in the first room


def test_down_and_enter_in_one_read_choose_the_room_moved_to(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """``send-keys C-k Down Enter`` (one write) chose the first room: the switcher's up and
    down ran after the enter behind them (a laggy SSH link sends keys so)."""
    room, _ = start(tmux, shared_server)
    others = [f"input-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for other in others:
        tmux.keys("C-k", other, "Enter")
        tmux.wait_for(lambda s, o=other: f"#{o} " in status_row(s), f"in {other}", timeout=STARTUP)
    tmux.keys("C-k", "Down", "Enter")  # the list: room, others[0], others[1]
    tmux.wait_for(lambda s: f"#{others[0]} " in status_row(s), "the room moved to")
    tmux.keys("C-k", "Down", "Down", "Up", "Up", "Up", "Enter")  # round to the last
    tmux.wait_for(lambda s: f"#{others[1]} " in status_row(s), "round from the first")
    # A conversation as the sidebar shows it can be typed in the switcher.
    tmux.keys("C-k", "@Nobody99", "Enter")
    screen = tmux.wait_for(lambda s: "#@Nobody99" in s or "@Nobody99 " in status_row(s), "@")
    assert "cannot be joined" not in screen, screen
    assert room


def test_keys_in_the_same_read_as_the_search_everywhere_enters_go_to_the_matchs_room(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """``send-keys C-g WORD Enter Enter hello Enter`` (one write): the enters were taken after
    the keys behind them, so the dialog searched again for "WORDhello" and showed nothing.
    The second enter waits for the matches and opens the newest in its room, stepping through
    the matches (n goes older); the keys after it go there, in order."""
    room, _ = start(tmux, shared_server)
    word = f"zebra{uuid.uuid4().hex[:6]}"
    tmux.keys(f"older {word}", "Enter", f"newer {word}", "Enter")
    tmux.wait_for(lambda s: f"newer {word}" in s and input_text(s) == EMPTY_INPUT, "said")
    other = f"input-{uuid.uuid4().hex[:8]}"
    tmux.keys("C-k", other, "Enter")
    tmux.wait_for(lambda s: f"#{other} " in status_row(s), f"in {other}", timeout=STARTUP)
    tmux.keys("C-g", word, "Enter", "Enter", "n")
    screen = tmux.wait_for(lambda s: f"#{room} " in status_row(s), "the match's room")
    screen = tmux.wait_for(lambda s: "2 of 2" in search_row(s), "n: the older match")
    assert search_query(screen) == word, screen
    tmux.keys("hello after the search")  # typing leaves the search (see the next test)
    screen = tmux.wait_for(lambda s: input_text(s) == "hello after the search", "typed")
    assert not search_row(screen), screen
    tmux.keys("Enter")
    screen = tmux.wait_for(
        lambda s: "hello after the search" in s and input_text(s) == EMPTY_INPUT, "sent"
    )
    assert tmux.exit_status() is None, screen
    # A search that finds nothing keeps the dialog, with what was typed after the enter.
    tmux.keys("C-g", f"nothing{word}", "Enter", "Enter", "XY")
    tmux.wait_for(lambda s: f"0 matches for 'nothing{word}'" in s, "no matches")
    tmux.wait_for(lambda s: f"nothing{word}XY" in s, "the keys after it in the field")


def test_typing_while_stepping_through_matches_goes_back_to_the_message_box(
    shared_server: RunningServer, tmux: Tmux
) -> None:
    """After enter in the search, a printable key other than the search's own (n, N, /)
    leaves it, and it and the keys behind it go to the message box in order: "good morning"
    typed there went nowhere. (An enter in the same read as them is still taken for the next
    match: it is taken before the keys ahead of it have left the search.)"""
    start(tmux, shared_server)
    tmux.keys("findable line", "Enter")
    tmux.wait_for(lambda s: "findable line" in s and input_text(s) == EMPTY_INPUT, "said")
    tmux.keys("C-f", "findable", "Enter", "good morning")
    screen = tmux.wait_for(lambda s: input_text(s) == "good morning", "typed in the box")
    assert not search_row(screen), screen
    tmux.keys("Enter")
    tmux.wait_for(
        lambda s: "good morning" in s and input_text(s) == EMPTY_INPUT, "the message sent"
    )
