"""Unit tests of the wire format: names, rooms, formatting, parsing, sanitising."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat_protocol.frames import Frame, FrameKind, Send
from chat_protocol.names import NAME_PATTERN, is_valid_name, is_valid_room, random_name
from chat_protocol.text import STRIPPED_CHARACTERS, sanitize
from chat_protocol.v1 import (
    CONTINUATION_INDENT,
    SEPARATOR,
    decode_lines,
    encode_lines,
    format_error,
    format_join,
    format_leave,
    format_message,
    parse_frame,
)

names = st.from_regex(NAME_PATTERN, fullmatch=True)
texts = st.text(min_size=1)


@pytest.mark.parametrize("room", ["a", "general", "slytherin", "A-Z_09", "x" * 64, "-", "_"])
def test_valid_rooms(room: str) -> None:
    assert is_valid_room(room)


@pytest.mark.parametrize(
    "room",
    ["", "x" * 65, "a b", "a/b", "é", "room!", "a\n", "\u0661", "a.b", "ａ"],  # last: fullwidth
)
def test_invalid_rooms(room: str) -> None:
    assert not is_valid_room(room)


def test_random_names_are_well_formed() -> None:
    rng = random.Random(7)
    for _ in range(1000):
        name = random_name(rng)
        assert is_valid_name(name), name
        assert len(name) == len("user_") + 8


@given(names, texts)
def test_message_round_trip(name: str, text: str) -> None:
    frame = parse_frame(format_message(name, text))
    assert frame.kind is FrameKind.MESSAGE
    assert (frame.name, frame.text) == (name, text)


@given(names)
def test_join_and_leave_round_trip(name: str) -> None:
    join = parse_frame(format_join(name))
    leave = parse_frame(format_leave(name))
    assert (join.kind, join.name) == (FrameKind.JOIN, name)
    assert (leave.kind, leave.name) == (FrameKind.LEAVE, name)
    assert join.text == f"{name} joined the chat"


@given(st.text())
def test_error_notice_is_never_a_chat_frame(description: str) -> None:
    frame = parse_frame(format_error(description))
    assert frame.kind is FrameKind.ERROR


def test_exact_frame_formats() -> None:
    assert format_message("user_abcdef12", "hi") == "user_abcdef12 :: hi"
    assert format_join("user_abcdef12") == "user_abcdef12 joined the chat"
    assert format_leave("user_abcdef12") == "user_abcdef12 left the chat"
    assert format_error("nope") == "error: nope"


@given(st.text())
def test_parse_never_raises(frame: str) -> None:
    assert parse_frame(frame).kind in set(FrameKind)


def test_unknown_notice_shapes() -> None:
    assert parse_frame("server restarting").kind is FrameKind.NOTICE
    # A join-like notice for something that is not a name is just a notice ...
    assert parse_frame("some body joined the chat").kind is FrameKind.NOTICE
    assert parse_frame("1somebody left the chat").kind is FrameKind.NOTICE
    # ... and one for a chosen name is a join.
    assert parse_frame("somebody joined the chat") == Frame(
        FrameKind.JOIN, "somebody joined the chat", "somebody"
    )


@given(st.text())
def test_sanitize_leaves_no_forbidden_characters(text: str) -> None:
    clean = sanitize(text)
    if clean is not None:
        assert not set(clean) & STRIPPED_CHARACTERS
        assert clean.strip()


@given(st.text())
def test_sanitize_keeps_every_allowed_character_in_order(text: str) -> None:
    kept = "".join(c for c in text if c not in STRIPPED_CHARACTERS)
    assert sanitize(text) == (kept if kept.strip() else None)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("hello", "hello"),
        ("line one\nline two\tend", "line one\nline two\tend"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("a\rb\x00c\x7fd\x85e\x9bf", "abcdef"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("\u200e\u200f\u061c\u2066\u2067\u2068\u2069\u202a\u202b\u202c\u202d x", " x"),
        ("Привет, 世界 🐍", "Привет, 世界 🐍"),
        ("   ", None),
        ("\x07\x1b\n\t", None),
        ("", None),
    ],
)
def test_sanitize_examples(raw: str, clean: str | None) -> None:
    assert sanitize(raw) == clean


# --- multi-line messages ----------------------------------------------------------------------


@given(st.text())
def test_line_encoding_has_an_exact_inverse(text: str) -> None:
    assert decode_lines(encode_lines(text)) == text


@given(names, st.text())
def test_no_continuation_line_can_pass_for_a_frame(name: str, text: str) -> None:
    clean = sanitize(text)
    if clean is None:
        return
    frame = format_message(name, clean)
    lines = frame.splitlines()  # every line break Python (and a terminal) knows
    assert lines[0].startswith(name + SEPARATOR)
    for line in lines[1:]:
        assert line.startswith(CONTINUATION_INDENT)
        assert parse_frame(line).kind is FrameKind.NOTICE
    # What a client reads back is exactly what its sender's text became.
    assert parse_frame(frame) == Frame(FrameKind.MESSAGE, clean, name)


def test_multi_line_wire_format() -> None:
    frame = format_message("user_abcdef12", "one\ntwo\n\n  three")
    assert frame == "user_abcdef12 :: one\n  two\n  \n    three"
    assert parse_frame(frame).text == "one\ntwo\n\n  three"
    # A server without the indent: line breaks are kept as they are.
    assert parse_frame("user_abcdef12 :: a\nb").text == "a\nb"


@pytest.mark.parametrize(
    "separator", ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\r"]
)
def test_line_separators_other_than_newline_are_stripped(separator: str) -> None:
    assert sanitize(f"a{separator}b") == "ab"


def test_send_is_a_value() -> None:
    send = Send("hi", "n1")
    assert (send.text, send.nonce) == ("hi", "n1")
    assert Send("hi") == Send(text="hi", nonce=None) != Send("hi", "n1")
    assert repr(send) == "Send(text='hi', nonce='n1')"
    assert dataclasses.replace(send, text="ho") == Send("ho", "n1")
    with pytest.raises(TypeError):
        Send()  # type: ignore[call-arg]
