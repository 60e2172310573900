"""Links in chat text, Textual-free: where they are, what their host really is, opening them.

Only ``http`` and ``https`` links are found, and only they are ever opened. A link's host is
shown as the terminal cannot disguise it (:func:`shown_host`): a host with characters outside
ASCII is shown as the DNS sees it (``xn--…``) beside how it looks, and hidden characters
(zero-width, bidi controls, other format characters) are spelled out. Such a link
is :func:`suspicious`: it is not opened by a click, only by ``/open N!`` after being shown.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

# Up to whitespace or a character that cannot be in a URL as people paste them; trailing
# punctuation of the sentence is taken off after (see _trim).
_URL: Final = re.compile(r"https?://[^\s<>\"'`\x00-\x1f\x7f-\x9f]+", re.IGNORECASE)
_TRAILING: Final = ".,;:!?'\"*_~"
_PAIRS: Final = {")": "(", "]": "[", "}": "{", ">": "<"}
MAX_URL_CHARS: Final = 2048  # longer is not a link anyone means to open


def _trim(url: str) -> str:
    """Sentence punctuation after a link is not part of it; a closing bracket is, when the
    link opened it (Wikipedia's "Foo_(bar)")."""
    while url:
        last = url[-1]
        if last in _TRAILING or (last in _PAIRS and url.count(_PAIRS[last]) < url.count(last)):
            url = url[:-1]
        else:
            break
    return url


def find_links(text: str) -> list[tuple[int, int, str]]:
    """The links in ``text``, as ``(start, end, url)``, in order."""
    if "://" not in text:  # the common case, cheaply
        return []
    found: list[tuple[int, int, str]] = []
    for match in _URL.finditer(text):
        url = _trim(match.group())
        if len(url) > len("https://") and len(url) <= MAX_URL_CHARS and urlsplit_ok(url):
            found.append((match.start(), match.start() + len(url), url))
    return found


def urlsplit_ok(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def recent_links(texts: Iterable[str], limit: int) -> list[str]:
    """The newest ``limit`` links of ``texts`` (given newest first), newest first; a link said
    again counts once, where it was said last."""
    links: list[str] = []
    seen: set[str] = set()
    for text in texts:
        for _, _, url in reversed(find_links(text)):
            if url not in seen:
                seen.add(url)
                links.append(url)
                if len(links) == limit:
                    return links
    return links


# Characters that do not show, or that reorder what follows: spelled out wherever a host is.
def _hidden(char: str) -> bool:
    return unicodedata.category(char) in ("Cf", "Cc", "Zl", "Zp", "Co", "Cn") or (
        char.isspace() and char != " "
    )


def _script(char: str) -> str:
    """A rough script of a letter (the first word of its Unicode name: LATIN, CYRILLIC, ...)."""
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "?"


@dataclass(frozen=True, slots=True)
class Host:
    """A link's host as it looks and as it is."""

    shown: str  # safe to put on screen: hidden characters spelled out as <U+200B>
    ascii: str  # what the DNS is asked ("xn--…" for a host beyond ASCII)
    warnings: tuple[str, ...]  # why it may not be what it looks like; empty: plain


def host_of(url: str) -> Host:
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    warnings: list[str] = []
    at = parts.netloc.rfind("@")
    if at >= 0:  # https://good.com@evil.com/: what reads as the host is a user name
        user = "".join(f"<U+{ord(c):04X}>" if _hidden(c) else c for c in parts.netloc[:at])
        warnings.append(f"{user[:40]}@ before it is a user name, not the host")
    shown = "".join(f"<U+{ord(c):04X}>" if _hidden(c) else c for c in hostname)
    if shown != hostname:
        warnings.append("hidden characters")
    try:
        ascii_host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = hostname.encode("ascii", "backslashreplace").decode("ascii")
        warnings.append("not a valid host name")
    if not hostname.isascii():
        warnings.append("characters beyond ASCII")
        for label in hostname.split("."):
            scripts = {_script(c) for c in label if c.isalpha()}
            if len(scripts) > 1:
                warnings.append("mixed scripts: " + "+".join(sorted(scripts)).lower())
                break
    return Host(shown, ascii_host, tuple(warnings))


def suspicious(url: str) -> bool:
    return bool(host_of(url).warnings)


def shown_host(url: str) -> str:
    """The host as the user should read it before opening: plain for a plain host, else
    how it looks, what it really is, and why it is shown so."""
    host = host_of(url)
    if not host.warnings:
        return host.ascii
    return f"{host.shown} = {host.ascii} ({', '.join(host.warnings)})"


def shown_url(url: str) -> str:
    """The whole link safe to put on screen: hidden characters spelled out."""
    return "".join(f"<U+{ord(c):04X}>" if _hidden(c) else c for c in url)


def opener(environ: dict[str, str] | None = None) -> Sequence[str] | None:
    """The command that opens a link: ``$BROWSER`` (its first entry), else the system's
    opener; None when there is none (then the link is only shown)."""
    env = os.environ if environ is None else environ
    browser = env.get("BROWSER", "").split(os.pathsep)[0].strip()
    if browser:
        return browser.split()
    for command in ["open"] if sys.platform == "darwin" else ["xdg-open", "wslview"]:
        if shutil.which(command, path=env.get("PATH")):
            return [command]
    return None


def open_link(url: str, command: Sequence[str]) -> None:
    """Start ``command url`` apart from the app: no shell, no terminal (a text browser would
    fight the app for the screen), its own session. Only http(s) links get here."""
    if not urlsplit_ok(url):
        raise ValueError(f"not an http or https link: {shown_url(url)}")
    subprocess.Popen(
        [*command, url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
