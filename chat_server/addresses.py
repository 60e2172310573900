"""Which client address a connection counts against: the unit of every per-address share.

By default the TCP peer. From a trusted proxy (``--trusted-proxy CIDR``), the address it says
it forwards: the rightmost address of ``X-Forwarded-For`` (or ``Forwarded: for=``) that is not
itself a trusted proxy (each proxy appends the address it saw; the rightmost untrusted one is
the first that no proxy of ours vouches for). An IPv6 address counts as its /64: one
customer's prefix, as Ergo counts it.

Also the one rate that all of an address's connections spend their messages from
(:class:`AddressRate`).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TypeVar

from chat_server.stats import stats

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_V = TypeVar("_V")

# Addresses whose budgets a table remembers at once (an address not seen for a while starts
# afresh).
MAX_ADDRESSES = 10_000

# A Forwarded header's for= value: a token, or a quoted "[v6]:port" / "v4:port".
_FORWARDED_FOR = re.compile(r'for="?\[?([0-9A-Fa-f:.]+)\]?(?::\d+)?"?', re.IGNORECASE)


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies' networks; raises ValueError for one that is not a CIDR."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


@lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """What ``host`` counts as: itself (IPv4, or a name a test server may give), or its /64."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def trusted(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``host`` is in one of ``networks`` (a trusted proxy)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(
    peer: str | None, headers: Iterable[tuple[bytes, bytes]], proxies: tuple[Network, ...]
) -> str:
    """The address a connection from ``peer`` with these request headers counts as."""
    if peer is None:
        return "unknown"
    if not proxies or not trusted(peer, proxies):
        return address_key(peer)
    forwarded: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"x-forwarded-for":
            forwarded += [part.strip() for part in value.decode("latin-1").split(",")]
        elif lowered == b"forwarded":
            forwarded += _FORWARDED_FOR.findall(value.decode("latin-1"))
    for host in reversed(forwarded):
        if not host:
            continue
        if not trusted(host, proxies):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                break  # not an address: the header is not to be believed past here
            return address_key(host)
    return address_key(peer)


class AddressRate:
    """The messages of every connection from one address: ``rate`` a second, ``burst`` at
    once. A token bucket in one call (it is asked once per message)."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = self.tokens = burst
        self.last = time.monotonic()

    def take(self, now: Callable[[], float] = time.monotonic) -> bool:
        """One message more, if the address has one left."""
        moment = now()
        tokens = self.tokens + (moment - self.last) * self.rate
        self.last = moment
        if tokens >= 1.0:
            self.tokens = (tokens if tokens < self.burst else self.burst) - 1.0
            return True
        self.tokens = tokens
        return False


def remembered(table: OrderedDict[str, _V], address: str, make: Callable[[], _V]) -> _V:
    """``address``'s entry in ``table`` (``make()`` for one it has none of), the least
    recently seen forgotten past MAX_ADDRESSES: the bound fails open, counted in /metrics."""
    value = table.get(address)
    if value is None:
        value = table[address] = make()
        if len(table) > MAX_ADDRESSES:
            table.popitem(last=False)
            stats.addresses_forgotten += 1
    else:
        table.move_to_end(address)
    return value
