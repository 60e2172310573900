"""Reference servers for ``bench/server_bench.py``: same wire protocol, naive fan-out.

``fastapi`` (the baseline): the original design as it was written, FastAPI + uvicorn with
uvicorn's default settings (``ws="auto"``, which is websockets-sansio in uvicorn 0.54, and the
default loop, uvloop when installed). A ``ChatRoom`` broadcasts by awaiting each member's
``send_text`` in turn, so one member that stops reading stalls the whole room once the kernel
buffers fill.

``websockets``: the plain ``websockets`` library with ``broadcast()``, which never awaits
(and so buffers without limit for a member that stops reading). A reference point only.

Both speak the chat protocol: the join notice first, ``{name} :: {text}``, leave notices. They
do none of the hardening (no sanitising, no limits): that is what the benchmark compares
against.

    python bench/baseline_server.py --port 8001 [--impl fastapi|websockets]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import string

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

_rng = random.SystemRandom()


def _new_name(taken: set[str]) -> str:
    while True:
        letters = "".join(_rng.choices(string.ascii_lowercase, k=6))
        name = f"user_{letters}{_rng.randrange(100):02d}"
        if name not in taken:
            taken.add(name)
            return name


class ChatRoom:
    """The original design's room: a list of sockets and a broadcast that awaits each send."""

    def __init__(self) -> None:
        self.members: dict[WebSocket, str] = {}

    async def broadcast(self, text: str) -> None:
        for websocket in list(self.members):
            # A member that disconnected meanwhile is skipped; its own handler removes it.
            with contextlib.suppress(Exception):
                await websocket.send_text(text)


app = FastAPI()
rooms: dict[str, ChatRoom] = {}
names: set[str] = set()


@app.websocket("/chat/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    chat_room = rooms.setdefault(room, ChatRoom())
    name = _new_name(names)
    chat_room.members[websocket] = name
    await chat_room.broadcast(f"{name} joined the chat")
    try:
        while True:
            text = await websocket.receive_text()
            await chat_room.broadcast(f"{name} :: {text}")
    except WebSocketDisconnect:
        pass
    finally:
        chat_room.members.pop(websocket, None)
        names.discard(name)
        if not chat_room.members:
            rooms.pop(room, None)
        await chat_room.broadcast(f"{name} left the chat")


async def serve_websockets(host: str, port: int) -> None:
    """The same protocol on the plain ``websockets`` library, fanning out with broadcast()."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    ws_rooms: dict[str, set[ServerConnection]] = {}
    taken: set[str] = set()

    async def handler(connection: ServerConnection) -> None:
        path = connection.request.path if connection.request else ""
        room = path.removeprefix("/chat/")
        members = ws_rooms.setdefault(room, set())
        name = _new_name(taken)
        members.add(connection)
        broadcast(members, f"{name} joined the chat")
        try:
            async for message in connection:
                if isinstance(message, str):
                    broadcast(members, f"{name} :: {message}")
        except Exception:
            pass
        finally:
            members.discard(connection)
            taken.discard(name)
            if not members:
                ws_rooms.pop(room, None)
            broadcast(members, f"{name} left the chat")

    async with serve(handler, host, port) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--impl", choices=["fastapi", "websockets"], default="fastapi")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    if args.impl == "fastapi":
        import uvicorn

        # uvicorn's defaults for everything but the address and log level.
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return
    # Same event loop as uvicorn picks by default, so the comparison is about the library.
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_websockets(args.host, args.port))
    else:
        uvloop.run(serve_websockets(args.host, args.port))


if __name__ == "__main__":
    main()
