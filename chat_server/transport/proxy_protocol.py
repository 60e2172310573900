"""The PROXY protocol header (HAProxy's, versions 1 and 2) that a load balancer sends first on
each connection it opens to us: the client's address, where the TCP peer is the balancer.

Read only with ``--proxy-protocol``, and only on connections from ``--trusted-proxy``
networks (anyone else could claim any address): such a connection must start with the header
(a connection from a trusted proxy without it is refused). Spec:
https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # the longest v1 line, CRLF included
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX: Final = 16 + 536  # the header, and as many address bytes as we accept (TLVs too)


@dataclass(frozen=True, slots=True)
class Header:
    """A whole header: ``client`` (host, port), or None for a connection the proxy made on
    its own (a health check: ``UNKNOWN``, ``LOCAL``); ``length``: its bytes."""

    client: tuple[str, int] | None
    length: int


class Invalid(ValueError):
    """Not a PROXY protocol header (``str(exc)`` says what is wrong)."""


def parse(data: bytes) -> Header | None:
    """The header at the start of ``data``; None if more bytes are needed. Raises
    :class:`Invalid`."""
    if data[:1] == b"P" or (len(data) < len(V1_PREFIX) and V1_PREFIX.startswith(data)):
        return _v1(data)
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _v2(data)
    raise Invalid("the connection did not start with a PROXY protocol header")


def _v1(data: bytes) -> Header | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or not V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
            raise Invalid("a PROXY v1 line longer than 107 bytes")
        return None
    words = data[:end].decode("ascii", "replace").split(" ")
    if words[0] != "PROXY":
        raise Invalid("not a PROXY v1 line")
    if words[1:2] == ["UNKNOWN"]:
        return Header(None, end + 2)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise Invalid("a PROXY v1 line is PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    try:
        source = ipaddress.ip_address(words[2])
        port = int(words[4])
    except ValueError:
        raise Invalid("a PROXY v1 line with a bad address or port") from None
    if source.version != (4 if words[1] == "TCP4" else 6) or not 0 <= port <= 65535:
        raise Invalid("a PROXY v1 line with a bad address or port")
    return Header((str(source), port), end + 2)


def _v2(data: bytes) -> Header | None:
    if len(data) < 16:
        return None
    version_command, family = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2:
        raise Invalid("a PROXY header of a version other than 2")
    if 16 + length > V2_MAX:
        raise Invalid(f"a PROXY v2 header over {V2_MAX} bytes")
    if len(data) < 16 + length:
        return None
    command, body = version_command & 0x0F, data[16 : 16 + length]
    if command == 0:  # LOCAL: the proxy's own connection
        return Header(None, 16 + length)
    if command != 1:
        raise Invalid("a PROXY v2 header with an unknown command")
    if family == 0x11 and length >= 12:  # TCP over IPv4
        host = str(ipaddress.IPv4Address(body[0:4]))
        port = int.from_bytes(body[8:10], "big")
    elif family == 0x21 and length >= 36:  # TCP over IPv6
        host = str(ipaddress.IPv6Address(body[0:16]))
        port = int.from_bytes(body[32:34], "big")
    elif family == 0x00:  # UNSPEC
        return Header(None, 16 + length)
    else:
        raise Invalid("a PROXY v2 header of an address family other than TCP over IPv4/IPv6")
    return Header((host, port), 16 + length)
