"""Notifications and links, Textual-free: which notification a terminal gets and what it holds
(nothing from the network reaches the terminal as a control), and which links are found,
shown and opened."""

from __future__ import annotations

import pytest

from chat_tui import links, notify
from chat_tui.notify import Method, Notice

# --- which notification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "method"),
    [
        ({"TERM": "xterm-kitty"}, Method.OSC99),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, Method.OSC99),
        ({"TERM_PROGRAM": "iTerm.app"}, Method.OSC9),
        ({"TERM_PROGRAM": "WezTerm"}, Method.OSC9),
        ({"TERM": "foot"}, Method.OSC777),
        ({"TERM": "xterm-256color", "VTE_VERSION": "7600"}, Method.OSC777),
        ({"TERM": "xterm-256color", "WT_SESSION": "x"}, Method.OSC9),
        # Inside tmux, TERM and TERM_PROGRAM are tmux's: what the terminal left behind counts.
        ({"TERM": "tmux-256color", "TERM_PROGRAM": "tmux", "VTE_VERSION": "7600"}, Method.OSC777),
        ({"TERM": "screen", "TERM_PROGRAM": "tmux", "LC_TERMINAL": "iTerm2"}, Method.OSC9),
        # Nothing known, no desktop: the bell.
        ({"TERM": "xterm-256color"}, Method.BELL),
        ({"TERM": "xterm-256color", "DISPLAY": ":0", "PATH": "/nonexistent"}, Method.BELL),
    ],
)
def test_auto_chooses_from_what_the_terminal_says_it_is(
    environ: dict[str, str], method: Method
) -> None:
    assert notify.choose("auto", environ) is method


def test_the_desktop_notifier_only_for_a_local_graphical_session(tmp_path: object) -> None:
    from pathlib import Path

    bin_dir = Path(str(tmp_path))
    tool = bin_dir / "notify-send"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    local = {"TERM": "xterm", "DISPLAY": ":0", "PATH": str(bin_dir)}
    assert notify.choose("auto", local) is Method.DESKTOP
    # Over SSH it would pop up on the far machine's screen, not the user's.
    assert notify.choose("auto", {**local, "SSH_CONNECTION": "1 2 3 4"}) is Method.BELL
    assert notify.choose("auto", {**local, "DISPLAY": ""}) is Method.BELL
    # A setting other than auto is taken as it is.
    assert notify.choose("osc9", local) is Method.OSC9


# --- what a notification holds -----------------------------------------------------------------

HOSTILE = "hi \x1b]52;c;cm0gLXJmIH4=\x07 \x1b[31mred\u202e\u200b\x9b2J\tand\nmore"


def test_a_notice_holds_no_control_and_is_cut() -> None:
    notice = Notice.of("room;x\x1b", "mallory\x07", HOSTILE)
    for text in (notice.title, notice.body):
        assert text.isprintable(), repr(text)
    assert notice.body == "mallory: hi ]52;c;cm0gLXJmIH4= [31mred2J and more"
    long = Notice.of("r", "a", "x" * 1000)
    assert len(long.body) == notify.BODY_CHARS and long.body.endswith("…")


@pytest.mark.parametrize(
    ("method", "written"),
    [
        (Method.OSC777, "\x1b]777;notify;ops, eu;bob: deploy done\x1b\\"),
        (Method.OSC9, "\x1b]9;ops; eu: bob: deploy done\x1b\\"),
        (
            Method.OSC99,
            "\x1b]99;i=chat-tui:d=0:p=title;ops; eu\x1b\\"
            "\x1b]99;i=chat-tui:d=1:p=body;bob: deploy done\x1b\\",
        ),
        (Method.BELL, "\a"),
        (Method.DESKTOP, ""),
    ],
)
def test_the_sequences(method: Method, written: str) -> None:
    assert notify.sequence(method, Notice.of("ops; eu", "bob", "deploy done")) == written


def test_inside_tmux_the_sequence_is_passed_through() -> None:
    notice = Notice.of("ops", "bob", "hi")
    wrapped = notify.sequence(Method.OSC777, notice, tmux=True)
    assert wrapped == "\x1bPtmux;\x1b\x1b]777;notify;ops;bob: hi\x1b\x1b\\\x1b\\"
    assert notify.sequence(Method.BELL, notice, tmux=True) == "\a"


def test_the_desktop_command_has_no_shell() -> None:
    command = notify.desktop_command(Notice.of("ops", "bob", "$(rm -rf ~) -x"))
    assert command == ["notify-send", "--app-name=chat-tui", "--", "ops", "bob: $(rm -rf ~) -x"]


# --- links ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("see https://example.com/a?b=c#d.", ["https://example.com/a?b=c#d"]),
        ("(https://en.wikipedia.org/wiki/Foo_(bar))", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
        ("http://a.example, HTTPS://B.example/x!", ["http://a.example", "HTTPS://B.example/x"]),
        ("<https://example.com/x>", ["https://example.com/x"]),
        ("not links: ftp://x.example javascript:alert(1) file:///etc/passwd https://", []),
        ("https://:80/ http://[::1/", []),
        # C1 controls end a link (the hyperlink and /open must agree on where it ends).
        ("https://x.example/\x9c\x9dz", ["https://x.example/"]),
    ],
)  # fmt: skip
def test_links_are_found(text: str, found: list[str]) -> None:
    assert [url for _, _, url in links.find_links(text)] == found


def test_recent_links_newest_first_once_each() -> None:
    said = ["https://c.example", "old https://a.example https://b.example", "https://a.example"]
    assert links.recent_links(said, 10) == [
        "https://c.example",
        "https://b.example",
        "https://a.example",
    ]
    assert links.recent_links(said, 2) == ["https://c.example", "https://b.example"]


@pytest.mark.parametrize(
    ("url", "shown", "suspicious"),
    [
        ("https://example.com/x", "example.com", False),
        # Cyrillic "а" in a Latin name: a lookalike.
        (
            "https://p\u0430ypal.com/login",
            "p\u0430ypal.com = xn--pypal-4ve.com (characters beyond ASCII, "
            "mixed scripts: cyrillic+latin)",
            True,
        ),
        # A zero-width space hides in the host.
        (
            "https://exa\u200bmple.com/",
            "exa<U+200B>mple.com = example.com (hidden characters, characters beyond ASCII)",
            True,
        ),
        (
            "https://bücher.example/",
            "bücher.example = xn--bcher-kva.example (characters beyond ASCII)",
            True,
        ),
        # What reads as the host is a user name: the host is after the "@".
        (
            "https://good.example@evil.example/login",
            "evil.example = evil.example (good.example@ before it is a user name, not the host)",
            True,
        ),
    ],
)  # fmt: skip
def test_a_hosts_lookalike_is_shown(url: str, shown: str, suspicious: bool) -> None:
    assert links.shown_host(url) == shown
    assert links.suspicious(url) is suspicious


def test_only_http_links_are_opened(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="not an http or https link"):
        links.open_link("file:///etc/passwd", ["true"])
    with pytest.raises(ValueError):
        links.open_link("javascript:alert(1)", ["true"])
    assert links.opener({"BROWSER": "firefox --new-tab:lynx", "PATH": ""}) == [
        "firefox",
        "--new-tab",
    ]
    assert links.opener({"PATH": "/nonexistent"}) is None
