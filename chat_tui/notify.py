"""Notifications for a mention or a direct message out of sight, Textual-free.

How the user is reached is chosen once, at start (``notifications = "auto"``): the terminal's
own notification when the terminal says which it is, because it travels with the terminal's
output and so works over SSH (OSC 99 for kitty, OSC 9 for iTerm2, WezTerm, ghostty and
Windows Terminal, OSC 777 for VTE terminals, foot, urxvt and konsole); else a desktop
notifier when the session is local and one is installed (``notify-send``); else the bell.
Inside tmux, a terminal's sequence is wrapped in tmux's passthrough (``allow-passthrough on``
lets it out) so that it reaches the terminal outside.

Nothing from the network reaches the terminal as a control: a notification's title and body
have every control, escape, bidi and separator character removed, and are cut to
:data:`BODY_CHARS` and :data:`TITLE_CHARS`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from chat_protocol.text import STRIPPED_CHARACTERS

TITLE_CHARS: Final = 64
BODY_CHARS: Final = 200
DESKTOP_COMMAND: Final = "notify-send"


class Method(StrEnum):
    AUTO = "auto"
    OSC777 = "osc777"
    OSC9 = "osc9"
    OSC99 = "osc99"
    DESKTOP = "desktop"
    BELL = "bell"
    OFF = "off"


class Level(StrEnum):
    """What in a room calls for a notification (``notify_rooms``)."""

    ALL = "all"  # every message out of sight
    MENTIONS = "mentions"  # mentions and direct messages (the default)
    NONE = "none"


TERMINAL_METHODS: Final = (Method.OSC777, Method.OSC9, Method.OSC99)
# What a terminal says it is (TERM_PROGRAM, or TERM), and the notification it shows.
_BY_PROGRAM: Final = {
    "iterm.app": Method.OSC9,
    "iterm2": Method.OSC9,  # its LC_TERMINAL, which SSH and tmux pass on
    "wezterm": Method.OSC9,
    "ghostty": Method.OSC9,
    "vscode": Method.BELL,  # shows neither; its bell is visible
}
_BY_TERM: Final = {
    "xterm-kitty": Method.OSC99,
    "xterm-ghostty": Method.OSC9,
    "foot": Method.OSC777,
    "foot-extra": Method.OSC777,
    "rxvt-unicode": Method.OSC777,
    "rxvt-unicode-256color": Method.OSC777,
}


def _outer_term(environ: Mapping[str, str]) -> tuple[str, str]:
    """TERM_PROGRAM and TERM of the terminal itself: inside tmux they are tmux's own, and the
    terminal's are what the tmux server was started with (tmux keeps them in the session's
    environment when its update-environment says so; a program started in it inherits some)."""
    program = environ.get("TERM_PROGRAM", "").lower()
    term = environ.get("TERM", "").lower()
    if program == "tmux" or term.startswith(("tmux", "screen")):
        program, term = environ.get("LC_TERMINAL", "").lower(), ""
    return program, term


def choose(setting: str, environ: Mapping[str, str] | None = None) -> Method:
    """The method ``setting`` means in this environment (never AUTO)."""
    env = os.environ if environ is None else environ
    method = Method(setting)
    if method is not Method.AUTO:
        return method
    program, term = _outer_term(env)
    if env.get("KITTY_WINDOW_ID") or term == "xterm-kitty":
        return Method.OSC99
    if program in _BY_PROGRAM:
        return _BY_PROGRAM[program]
    if term in _BY_TERM:
        return _BY_TERM[term]
    if env.get("WT_SESSION"):  # Windows Terminal
        return Method.OSC9
    if env.get("VTE_VERSION") or env.get("KONSOLE_VERSION"):
        return Method.OSC777
    if local_desktop(env):
        return Method.DESKTOP
    return Method.BELL


def local_desktop(environ: Mapping[str, str]) -> bool:
    """A desktop notifier would show on the screen in front of the user: a local graphical
    session (not SSH) with ``notify-send`` installed."""
    if environ.get("SSH_CONNECTION") or environ.get("SSH_TTY"):
        return False
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        return False
    return shutil.which(DESKTOP_COMMAND, path=environ.get("PATH")) is not None


def in_tmux(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("TMUX"))


# Controls go (zero-width characters too: they could hide what a body says); line breaks and
# tabs become spaces.
_CLEAN: Final[dict[int, str | None]] = dict.fromkeys(
    map(ord, STRIPPED_CHARACTERS | set("\u200b\u200c\u200d\u2060\ufeff"))
)
_CLEAN.update({ord("\t"): " ", ord("\n"): " "})


def clean(text: str, limit: int) -> str:
    """``text`` as a notification may carry it: one line, no control of any kind, at most
    ``limit`` characters (cut ones end with "…")."""
    text = " ".join(text.translate(_CLEAN).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification: ``title`` (the room) and ``body`` (``sender: text``), cleaned."""

    title: str
    body: str

    @classmethod
    def of(cls, room: str, sender: str | None, text: str) -> Notice:
        said = f"{sender}: {text}" if sender else text
        return cls(clean(room, TITLE_CHARS), clean(said, BODY_CHARS))


def sequence(method: Method, notice: Notice, *, tmux: bool = False) -> str:
    """What is written to the terminal for ``notice`` ("" for the desktop notifier)."""
    if method is Method.BELL:
        return "\a"  # tmux passes the bell on by itself (its bell-action)
    # ";" separates OSC 777's fields: a title holding one would shift the body.
    title = notice.title.replace(";", ",")
    if method is Method.OSC777:
        written = f"\x1b]777;notify;{title};{notice.body}\x1b\\"
    elif method is Method.OSC9:
        written = f"\x1b]9;{notice.title}: {notice.body}\x1b\\"
    elif method is Method.OSC99:
        # Title, then body, of one notification (i=), as kitty's protocol has it.
        written = (
            f"\x1b]99;i=chat-tui:d=0:p=title;{notice.title}\x1b\\"
            f"\x1b]99;i=chat-tui:d=1:p=body;{notice.body}\x1b\\"
        )
    else:
        return ""
    return wrap_for_tmux(written) if tmux else written


def wrap_for_tmux(written: str) -> str:
    """``written`` in tmux's passthrough: every ESC doubled inside ``ESC P tmux; ... ESC \\``."""
    return "\x1bPtmux;" + written.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def desktop_command(notice: Notice) -> list[str]:
    """The desktop notifier's argument list (no shell: the text is one argument each)."""
    return [DESKTOP_COMMAND, "--app-name=chat-tui", "--", notice.title, notice.body]
