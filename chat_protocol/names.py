"""Room names and member names: the rules both sides check, and the generated-name form."""

from __future__ import annotations

import random
import re
import string
from typing import Final

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROOM_RULE: Final = "room names are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"

# Every name the server gives starts with this.
GENERATED_PREFIX: Final = "user_"
NAME_PATTERN: Final = re.compile(r"user_[a-z]{6}[0-9]{2}")
# A name a client chooses (``?name=``): never of the generated form, which stays the server's.
CHOSEN_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,23}")
CHOSEN_RULE: Final = (
    "a name is 2-24 characters of A-Z, a-z, 0-9, '_' and '-', starting with a letter"
)
GENERATED_RULE: Final = "names of the form user_abcdef12 are the server's to give"

_rng = random.SystemRandom()


# A conversation with one person is addressed as DIRECT_PREFIX + their name ("@alice").
DIRECT_PREFIX: Final = "@"
DIRECT_RULE: Final = "a conversation is '@' and the name of the person it is with"


def direct_peer(room: str) -> str | None:
    """The name a conversation address ("@alice") is with; None if it is not one."""
    return room[1:] if room.startswith(DIRECT_PREFIX) else None


def is_valid_room(room: str) -> bool:
    return ROOM_PATTERN.fullmatch(room) is not None


def room_problem(room: str) -> str | None:
    """Why ``room`` is not a valid room name, for a person; None if it is one."""
    if is_valid_room(room):
        return None
    return f"invalid room name {room!r}: {ROOM_RULE}"


def is_valid_name(name: str) -> bool:
    """A name the server may have given a member: generated or chosen."""
    return NAME_PATTERN.fullmatch(name) is not None or CHOSEN_PATTERN.fullmatch(name) is not None


def chosen_name_problem(name: str) -> str | None:
    """The rule ``name`` breaks as a chosen name, for a person; None if it may be chosen."""
    if NAME_PATTERN.fullmatch(name.lower()) is not None:  # in any case
        return GENERATED_RULE
    if CHOSEN_PATTERN.fullmatch(name) is None:
        return CHOSEN_RULE
    return None


def name_key(name: str) -> str:
    """What makes two names the same: names are unique whatever their case (``Alice`` and
    ``alice`` are one name)."""
    return name.lower()


def random_name(rng: random.Random | None = None) -> str:
    """A fresh candidate name; uniqueness is the broker's job."""
    r = rng or _rng
    letters = "".join(r.choices(string.ascii_lowercase, k=6))
    digits = "".join(r.choices(string.digits, k=2))
    return f"{GENERATED_PREFIX}{letters}{digits}"
