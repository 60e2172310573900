"""Chat text: what sanitising removes, and the sets of characters both sides must know.

The server sanitises every message before it is numbered, kept or published; the client uses
the same sets to show text from the network safely (``chat_tui.text_layout``).
"""

from __future__ import annotations

from typing import Final

# Bidirectional controls: they could reorder the rest of a line on screen.
BIDI_CONTROLS: Final = (
    "\u200e\u200f\u061c"
    + "".join(map(chr, range(0x202A, 0x202F)))
    + "".join(map(chr, range(0x2066, 0x206A)))
)
# Line and paragraph separators other than "\n": a line-based client would break a line at
# each of them (VT, FF, FS-RS and NEL are C0/C1 controls, stripped with those).
LINE_SEPARATORS: Final = "\u2028\u2029"
# Surrogate code points alone (JSON can carry "\ud800"): no UTF-8 can encode them, so text
# holding one could be numbered and kept but never delivered.
SURROGATES: Final = "".join(map(chr, range(0xD800, 0xE000)))
_STRIPPED: Final = (
    [chr(c) for c in range(0x00, 0x20) if chr(c) not in "\n\t"]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + list(BIDI_CONTROLS)
    + list(LINE_SEPARATORS)
    + list(SURROGATES)
)
_STRIP_TABLE: Final = dict.fromkeys(map(ord, _STRIPPED))
STRIPPED_CHARACTERS: Final = frozenset(_STRIPPED)


def sanitize(text: str) -> str | None:
    """Strip control, bidi and line-separator characters (``\\n`` and ``\\t`` stay); ``None``
    if nothing worth sending remains."""
    if not text.isascii() or not text.isprintable():
        text = text.translate(_STRIP_TABLE)
    if not text or text.isspace():
        return None
    return text


# An action ("/me waves"): plain text on the wire, so that a client that knows nothing of
# actions shows "alice :: /me waves", which reads as IRC users expect; a client that knows
# shows "* alice waves".
ACTION_PREFIX: Final = "/me "


def action(text: str) -> str:
    """The text that carries the action ``text``."""
    return ACTION_PREFIX + text


def action_text(text: str) -> str | None:
    """What is acted, if ``text`` carries an action; None if it is a plain message."""
    if text.startswith(ACTION_PREFIX) and text[len(ACTION_PREFIX) :].strip():
        return text[len(ACTION_PREFIX) :]
    return None
