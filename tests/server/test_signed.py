"""Private servers (issue 16): with --jwt-secret-file (HS256) or --jwt-public-key-file (RS256,
ES256) every WebSocket presents a signed token; its sub is the name, its exp ends the
connection (4004), its rooms claim limits where it may go, its mod claim makes a moderator.
Tokens are made here with PyJWT, as an operator's issuer would."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import InvalidStatus

from chat_protocol import admin, admin_client
from chat_protocol.close import CloseCode
from chat_protocol.v1 import format_join
from chat_protocol.v2 import change_nick
from chat_server.ops.logs import mask_tokens
from chat_testing.clusters import running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from tests.server.clirunner import Cli
from tests.server.test_governance import closed_with, fresh_room
from tests.server.test_names import refused
from tests.server.wsclients import Member, V2Member, join, join_v2

SECRET = secrets.token_urlsafe(48).encode()


def token(
    sub: str, seconds: float = 600, key: Any = SECRET, algorithm: str = "HS256", **claims: Any
) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + seconds), **claims}, key, algorithm)


def bearer(signed: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {signed}"}}


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwt") / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture
def private(server_factory: Callable[..., RunningServer], secret_file: Path) -> RunningServer:
    return server_factory(
        jwt_secret_file=secret_file, rate_limit=0, env={"CHAT_SERVER_JWT_LEEWAY": "0"}
    )


def status_of(exc: InvalidStatus) -> tuple[int, str]:
    return exc.response.status_code, json.loads(exc.response.body)["detail"]


@pytest.mark.memory_only
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "a signed token is needed (Authorization: Bearer, or ?token=)"),
        ({"Authorization": "Bearer not.a.token"}, "not a good token: "),
        (
            {"Authorization": f"Bearer {token('Ann', key=b'x' * 48)}"},
            "Signature verification failed",
        ),
        ({"Authorization": f"Bearer {token('Ann', seconds=-60)}"}, "the token has expired"),
        ({"Authorization": f"Bearer {token('user_abcdef12')}"}, "the token's sub is not a name"),
        ({"Authorization": f"Bearer {token('Ann', algorithm='HS512')}"}, "not a good token"),
    ],
)
async def test_a_missing_or_bad_token_is_refused_before_the_upgrade(
    private: RunningServer, headers: dict[str, str], detail: str
) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(private.chat_url(fresh_room()), additional_headers=headers)
    status, said = status_of(info.value)
    assert status == 401 and detail in said
    # Why, for a client that reads no body of a refused handshake (RFC 6750).
    challenge = info.value.response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="chat", error="invalid_token", error_description="')
    assert detail in challenge


async def test_the_sub_is_the_name_in_every_room_and_a_newer_connection_replaces_the_older(
    private: RunningServer,
) -> None:
    room, other_room = fresh_room(), fresh_room()
    name = f"Ann{secrets.token_hex(3)}"
    first = await join(private.chat_url(room), **bearer(token(name)))
    assert first.name == name
    # ?token= too, and the same name in another room at once (chat.v2 as well).
    in_query = token(name)
    elsewhere = await join_v2(private.chat_url(other_room) + f"?token={in_query}")
    assert elsewhere.name == name
    assert in_query not in private.log()  # a token in a query is never logged
    watcher = await join(private.chat_url(room), **bearer(token(f"Wat{secrets.token_hex(3)}")))
    newer = await join(private.chat_url(room), **bearer(token(name)))
    assert newer.name == name
    assert await closed_with(first) == (
        CloseCode.POLICY_VIOLATION,
        "replaced by a newer connection under the same name",
    )
    frames = await watcher.recv_until(lambda f: f == format_join(name))
    assert f"{name} left the chat" in frames
    # The name is the token's: no nick change.
    await elsewhere.ws.send(change_nick("Other"))
    error = (await elsewhere.recv_until(lambda f: f.get("type") == "error"))[-1]
    assert "signed token" in error["text"]
    for member in (elsewhere, watcher, newer):
        await member.close()


async def test_expiry_during_the_connection_closes_it_with_4004(private: RunningServer) -> None:
    member = await join(private.chat_url(fresh_room()), **bearer(token("Tim", seconds=2)))
    began = time.monotonic()
    assert await closed_with(member, timeout=10) == (CloseCode.TOKEN_EXPIRED, "token expired")
    assert time.monotonic() - began < 5


@pytest.mark.memory_only
async def test_the_rooms_claim_limits_where_it_may_join(private: RunningServer) -> None:
    signed = token("Rae", rooms=["team-*", "lobby"])
    inside = await join(private.chat_url("team-red"), **bearer(signed))
    lobby = await join(private.chat_url("lobby"), **bearer(signed))
    assert await refused(private.chat_url("secrets"), **bearer(signed)) == (
        CloseCode.POLICY_VIOLATION,
        "not allowed in this room",
    )
    await inside.close()
    await lobby.close()


@pytest.mark.memory_only
async def test_the_mod_claim_moderates_its_rooms_through_the_admin_api(
    private: RunningServer,
) -> None:
    room = fresh_room()
    moderator = token("Mod", mod=[room])
    member = await join(private.chat_url(room), **bearer(token("Kim")))
    kicked = await admin_client.call(
        private.http_url, moderator, "POST", admin.KICK_PATH, {"room": room, "name": "Kim"}
    )
    assert kicked.ok, kicked
    assert (await closed_with(member))[0] == CloseCode.KICKED
    outside = await admin_client.call(private.http_url, moderator, "POST", admin.room_path("x"), {})
    assert (outside.status, outside.detail) == (403, "Mod may not act in x")
    plain = await admin_client.call(private.http_url, token("Kim"), "GET", admin.room_path(room))
    assert plain.status == 403
    forged = await admin_client.call(
        private.http_url, token("Mod", key=b"y" * 48, mod=[room]), "GET", admin.room_path(room)
    )
    assert forged.status == 401


@pytest.mark.memory_only
async def test_who_is_where_is_for_token_holders_only(private: RunningServer) -> None:
    room = fresh_room()
    member = await join(private.chat_url(room), **bearer(token("Lou")))
    assert (await admin_client.call(private.http_url, "", "GET", f"/rooms/{room}")).status == 401
    listed = await admin_client.call(private.http_url, token("Viv"), "GET", f"/rooms/{room}")
    assert listed.body["members"] == ["Lou"]
    assert private.health() is not None  # a balancer's health check needs no token
    await member.close()


def _key_pair(kind: str) -> tuple[bytes, bytes, str]:
    """(private PEM, public PEM, algorithm)."""
    if kind == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algorithm = "RS256"
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        algorithm = "ES256"
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem, algorithm


@pytest.mark.memory_only
@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_tokens_signed_with_a_private_key(
    server_factory: Callable[..., RunningServer], tmp_path: Path, kind: str
) -> None:
    private_pem, public_pem, algorithm = _key_pair(kind)
    (tmp_path / "public.pem").write_bytes(public_pem)
    server = server_factory(jwt_public_key_file=tmp_path / "public.pem", rate_limit=0)
    room = server.chat_url(fresh_room())
    member = await join(room, **bearer(token("Pia", key=private_pem, algorithm=algorithm)))
    assert member.name == "Pia"
    await member.close()
    # The public key is no HS256 secret: a token "signed" with it is refused.
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(room, **bearer(token("Eve", key=b"k" * 48)))
    assert status_of(info.value)[0] == 401


@pytest.mark.memory_only
def test_unusable_key_files_are_a_clear_error_at_start(cli: Cli, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("tiny\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    long_enough = tmp_path / "secret"
    long_enough.write_text("s" * 40)
    cases = [
        (["--jwt-secret-file", str(short)], "an HS256 secret has at least 32"),
        (["--jwt-public-key-file", str(garbage)], "is not a PEM public key"),
        (["--jwt-secret-file", str(tmp_path / "none")], "cannot be read"),
        (
            ["--jwt-secret-file", str(long_enough), "--jwt-public-key-file", str(garbage)],
            "not both",
        ),
    ]
    for args, message in cases:
        result = cli("run", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


@requires_redis
async def test_one_sub_is_one_name_across_processes(secret_file: Path) -> None:
    with running_cluster(
        2, jwt_secret_file=secret_file, rate_limit=0, env={"CHAT_SERVER_JWT_LEEWAY": "0"}
    ) as cluster:
        one, two = cluster.nodes
        room = fresh_room()
        first: Member = await join(one.chat_url(room), **bearer(token("Zoe")))
        second: V2Member = await join_v2(two.chat_url(fresh_room()), **bearer(token("Zoe")))
        assert (first.name, second.name) == ("Zoe", "Zoe")
        newer = await join(two.chat_url(room), **bearer(token("Zoe")))
        assert (await closed_with(first))[0] == CloseCode.POLICY_VIOLATION  # replaced
        await newer.close()
        await second.close()


def test_tokens_in_a_query_are_masked_wherever_a_line_quotes_it() -> None:
    line = '"GET /chat/r?token=eyJ.a.b&history=5&resume=Ann.s3cret HTTP/1.1" 101'
    assert mask_tokens(line) == '"GET /chat/r?token=***&history=5&resume=*** HTTP/1.1" 101'
    # However the name is written: the server reads "%74oken" as "token".
    assert mask_tokens("/chat/r?%74oken=eyJ.a.b&x=1") == "/chat/r?%74oken=***&x=1"
    assert mask_tokens("/chat/r?Resume=Ann.s3cret") == "/chat/r?Resume=***"


@pytest.mark.memory_only
async def test_a_first_connection_may_be_a_conversation(private: RunningServer) -> None:
    """A signed token is the name's own: no resume token is needed for a conversation."""
    peer = await join_v2(private.chat_url(fresh_room()), **bearer(token("Pete")))
    conversation = await join_v2(private.chat_url("@Pete"), **bearer(token("Erin")))
    assert conversation.name == "Erin"
    await conversation.close()
    await peer.close()
