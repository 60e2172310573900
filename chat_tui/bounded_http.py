"""HTTP requests to a server that may be hostile: every answer within a total deadline, and no
more of its body than asked for, however it is sent.

httpx's timeouts are per read (a server that drips a byte a second never times out) and it
decodes a compressed body a whole received chunk at a time (3 KB of gzip in gzip is 2 GiB in
one step). So: one deadline for the whole exchange, ``Accept-Encoding: identity``, the body
read raw and, if the server compresses it anyway, inflated here at most ``limit`` bytes at a
time; an encoding stacked on another, or one we cannot bound, is refused.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Final

import httpx

NOT_COMPRESSED: Final = {"Accept-Encoding": "identity"}
_INFLATED: Final = frozenset({"gzip", "x-gzip", "deflate"})


async def get_status(client: httpx.AsyncClient, url: str, *, deadline: float) -> int:
    """The status of ``GET url``, its body not read; httpx.TimeoutException past ``deadline``
    seconds (headers dripped slowly included)."""
    try:
        async with asyncio.timeout(deadline), client.stream("GET", url) as response:
            return response.status_code
    except TimeoutError:
        raise httpx.ReadTimeout(f"no answer from {url} within {deadline:g} s") from None


async def get_bounded(
    client: httpx.AsyncClient,
    url: str,
    *,
    limit: int,
    deadline: float,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes | None]:
    """The status and body of ``GET url``; the body None if it is longer than ``limit`` bytes
    once decoded (the rest is not read). httpx.TimeoutException past ``deadline`` seconds for
    the whole exchange, httpx.DecodingError for an encoding that cannot be read within bounds.
    """
    try:
        async with (
            asyncio.timeout(deadline),
            client.stream("GET", url, headers={**(headers or {}), **NOT_COMPRESSED}) as response,
        ):
            return response.status_code, await _read_at_most(response, limit)
    except TimeoutError:
        raise httpx.ReadTimeout(f"no whole answer from {url} within {deadline:g} s") from None


async def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    said = response.headers.get("content-encoding", "")
    encodings = [
        e for e in (e.strip().lower() for e in said.split(",")) if e not in ("", "identity")
    ]
    if len(encodings) > 1 or (encodings and encodings[0] not in _INFLATED):
        raise httpx.DecodingError(f"an answer encoded as {said!r}, which was not asked for")
    # 32 + 15: a gzip or zlib header, whichever comes.
    inflate = zlib.decompressobj(32 + zlib.MAX_WBITS) if encodings else None
    body = bytearray()
    async for chunk in _raw_chunks(response):
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, limit + 1 - len(body))
            except zlib.error as exc:
                raise httpx.DecodingError(f"a compressed answer that is not: {exc}") from None
            if inflate.unconsumed_tail:
                return None  # more than the limit is still to come out of it
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it came, undecoded (one made with its content in memory, as
    httpx.MockTransport's are, has it at hand already)."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk
