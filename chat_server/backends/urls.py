"""Which broker a ``--broker-url`` names, by its scheme (the backends are in this package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, unquote, urlsplit

MEMORY_SCHEMES: Final = frozenset({"memory"})
SQLITE_SCHEMES: Final = frozenset({"sqlite"})  # memory, kept on disk: one process too
# redis+sentinel://: the master of a Redis Sentinel service, asked for on every connect;
# redis+cluster://: a Redis Cluster, found from any of its nodes.
REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix", "redis+sentinel", "redis+cluster"})
SCHEMES: Final = MEMORY_SCHEMES | SQLITE_SCHEMES | REDIS_SCHEMES


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ValueError(f"unsupported broker URL {url!r} (supported: {supported})")
    return scheme


def is_shared(url: str) -> bool:
    """Whether processes using ``url`` form one chat (only Redis: ``memory://`` and
    ``sqlite://`` are one process's)."""
    return scheme_of(url) in REDIS_SCHEMES


SENTINEL_SCHEME: Final = "redis+sentinel"
SENTINEL_PORT: Final = 26379  # Redis Sentinel's own default


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """``redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT...]/SERVICE_NAME[/DB]``: the
    credentials and the database are the master's (the sentinels are asked without)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelUrl:
    parts, hosts, username, password = _split(url, SENTINEL_SCHEME)
    sentinels = tuple(_host_port(h) for h in hosts.split(","))
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if not 1 <= len(path) <= 2 or not path[0]:
        raise ValueError(f"a {SENTINEL_SCHEME}:// URL ends in /SERVICE_NAME or /SERVICE_NAME/DB")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"database {path[1]!r} is not a number")
        db = int(path[1])
    return SentinelUrl(sentinels, path[0], db, username, password)


def _split(url: str, scheme: str) -> tuple[SplitResult, str, str | None, str | None]:
    """A ``scheme://[[user]:password@]HOSTS...`` URL: its parts, hosts, user and password."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ValueError(f"not a {scheme}:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"a {scheme}:// URL takes no ?options or #fragment")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return parts, hosts, username, password


def _host_port(
    text: str, default_port: int = SENTINEL_PORT, what: str = "sentinel"
) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"{what} {text!r} has no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {text!r} has no valid port")
    return host, int(port)


# redis+cluster://: a Redis Cluster, found from any of its nodes (docs/scaling.md, "Redis
# Cluster").
CLUSTER_SCHEME: Final = "redis+cluster"
REDIS_PORT: Final = 6379


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """``redis+cluster://[[user]:password@]HOST:PORT[,HOST:PORT...]``: seed nodes (any of the
    cluster's: the others are learnt from them), and the credentials of every node. A cluster
    has only database 0, so the URL has no path (or ``/0``)."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterUrl:
    parts, hosts, username, password = _split(url, CLUSTER_SCHEME)
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a {CLUSTER_SCHEME}:// URL has no path (a cluster has database 0 only)")
    seeds = tuple(_host_port(h, REDIS_PORT, "cluster node") for h in hosts.split(","))
    return ClusterUrl(seeds, username, password)
