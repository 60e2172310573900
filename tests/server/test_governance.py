"""Operators and moderators (issue 16): the admin API kicks, bans, mutes and sets rooms' topic,
slow mode and lock; moderator tokens do the same in their rooms. Both brokers; the cluster-wide
cases (a ban made through one process enforced by another) on 3 processes and a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from chat_protocol import admin, admin_client
from chat_protocol.close import CloseCode
from chat_protocol.frames import FrameKind
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_error, format_kick, format_topic, parse_frame
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_protocol.v2 import TYPING_FRAME, change_nick
from chat_testing.clusters import running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.clirunner import Cli
from tests.server.test_names import refused
from tests.server.wsclients import Member, V2Member, join, join_v2, resume_query

ADMIN_TOKEN = "ops-" + secrets.token_hex(12)
_rooms = itertools.count()


def fresh_room() -> str:
    return f"gov-{next(_rooms)}-{secrets.token_hex(2)}"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("admin") / "admin-tokens"
    path.write_text(f"# the operators\nops {ADMIN_TOKEN}\n")
    return path


@pytest.fixture
def server(server_factory: Callable[..., RunningServer], token_file: Path) -> RunningServer:
    return server_factory(admin_token_file=token_file, rate_limit=0)


async def ask(
    server: RunningServer,
    method: str,
    path: str,
    body: dict[str, object] | None = None,
    token: str = ADMIN_TOKEN,
) -> admin_client.Answer:
    return await admin_client.call(server.http_url, token, method, path, body)


async def done(server: RunningServer, method: str, path: str, body: dict[str, object]) -> dict:
    answer = await ask(server, method, path, body)
    assert answer.ok, answer
    return answer.body


async def closed_with(member: Member | V2Member, timeout: float = 5.0) -> tuple[int, str]:
    """The close that ends ``member``'s connection (whatever it receives before it)."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(member.ws.recv(), max(0.01, deadline - time.monotonic()))
    received = info.value.rcvd
    assert received is not None
    return received.code, received.reason


# --- turning it on ------------------------------------------------------------------------


@pytest.mark.memory_only
async def test_the_admin_api_is_not_there_unless_configured(
    server_factory: Callable[..., RunningServer], token_file: Path
) -> None:
    plain = server_factory(rate_limit=0)
    answer = await ask(plain, "POST", admin.KICK_PATH, {"name": "user_abcdef12"})
    assert answer.status == 404
    configured = server_factory(admin_token_file=token_file, rate_limit=0)
    for token in ("", "wrong-" + ADMIN_TOKEN):
        answer = await ask(configured, "POST", admin.KICK_PATH, {"name": "x"}, token=token)
        assert answer.status == 401
    assert (await ask(configured, "GET", admin.BANS_PATH)).body == {"bans": []}


@pytest.mark.memory_only
def test_a_token_file_without_a_usable_token_is_a_clear_error_at_start(
    cli: Cli, tmp_path: Path
) -> None:
    short = tmp_path / "short"
    short.write_text("ops tooshort\n")
    for path, message in ((short, "at least 16 characters"), (tmp_path / "none", "No such file")):
        result = cli("run", "--admin-token-file", str(path))
        assert result.returncode == 2
        assert "admin-token-file cannot be used" in result.stderr and message in result.stderr
        assert "Traceback" not in result.stderr


# --- kicks --------------------------------------------------------------------------------


async def test_a_kick_closes_the_member_and_the_room_is_told_why(server: RunningServer) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    kicked, text_member = await join(url), await join(url)
    v2_member = await join_v2(url)
    await text_member.recv()  # the v2 member's join
    body = {"room": room, "name": kicked.name, "reason": "spamming links"}
    await done(server, "POST", admin.KICK_PATH, body)
    assert await closed_with(kicked) == (CloseCode.KICKED, "kicked: spamming links")
    assert await text_member.recv() == format_kick(kicked.name, "spamming links")
    frame = (await v2_member.recv_until(lambda f: f.get("type") == "kick"))[-1]
    assert (frame["name"], frame["reason"]) == (kicked.name, "spamming links")
    wait_until(lambda: kicked.name not in server.get_json(f"/rooms/{room}")["members"])
    # Nobody of that name there (or anywhere): said, not "done".
    nobody = await ask(server, "POST", admin.KICK_PATH, {"room": room, "name": kicked.name})
    assert (nobody.status, nobody.detail) == (404, f"{kicked.name} is not in {room}")
    nowhere = await ask(server, "POST", admin.KICK_PATH, {"name": "Nobody"})
    assert (nowhere.status, nowhere.detail) == (404, "nobody is called Nobody")
    # Said in place of the leave notice: no "left the chat" follows.
    await text_member.ws.send("still here")
    assert await text_member.recv() == f"{text_member.name} :: still here"
    await text_member.close()
    await v2_member.close()


async def test_a_kick_without_a_room_takes_the_name_out_of_every_room(
    server: RunningServer,
) -> None:
    one, two = fresh_room(), fresh_room()
    first = await join_v2(server.chat_url(one))
    second = await join_v2(server.chat_url(two), join_query(JoinRequest(resume=first.token)))
    await done(server, "POST", admin.KICK_PATH, {"name": first.name, "reason": "go"})
    assert await closed_with(first) == (CloseCode.KICKED, "kicked: go")
    assert await closed_with(second) == (CloseCode.KICKED, "kicked: go")


async def test_a_long_reason_in_any_script_still_reaches_the_member_whole_in_its_close(
    server: RunningServer,
) -> None:
    """A close reason is at most 123 bytes: a reason of 70 "é" (140 bytes) is cut there, at a
    character's boundary, and the member still reads why."""
    room = fresh_room()
    member, watcher = await join(server.chat_url(room)), await join(server.chat_url(room))
    reason = "é" * 70 + " :: fake :: message"
    await done(
        server, "POST", admin.KICK_PATH, {"room": room, "name": member.name, "reason": reason}
    )
    code, said = await closed_with(member)
    assert code == CloseCode.KICKED and said.startswith("kicked: éé")
    assert len(said.encode()) <= 123
    # The room's notice stays a notice: no " :: " makes it a message of someone else's.
    notice = await watcher.recv_until(lambda f: " was kicked: " in f)
    assert parse_frame(notice[-1]).kind is FrameKind.KICK
    await watcher.close()


@pytest.mark.memory_only
async def test_a_body_nested_too_deeply_is_a_bad_request(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        answer = await client.post(
            admin.KICK_PATH,
            content="[" * 16_000,
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert answer.status_code == 400
    assert server.health() is not None


@pytest.mark.memory_only
@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        # A misspelt field was answered 200 and ignored: the room was not locked.
        (admin.room_path("typo"), {"lock": True}, "unknown field 'lock'"),
        (admin.KICK_PATH, {"name": "x", "rooms": "typo"}, "unknown field 'rooms'"),
        (admin.BAN_PATH, {"name": "Eve", "address": "192.0.2.1"}, "not both"),
    ],
)
async def test_a_body_the_request_does_not_take_is_refused_not_ignored(
    server: RunningServer, path: str, body: dict[str, object], detail: str
) -> None:
    refused_ = await ask(server, "POST", path, body)
    assert refused_.status == 400 and detail in refused_.detail, refused_.detail
    if path == admin.room_path("typo"):
        assert (await ask(server, "GET", path)).body["locked"] is False
    bans = (await ask(server, "GET", admin.BANS_PATH)).body["bans"]
    assert bans == []  # nothing half done


# --- bans ---------------------------------------------------------------------------------


async def test_a_name_ban_closes_the_member_refuses_its_return_and_ends(
    server: RunningServer,
) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    banned = await join_v2(url, "name=Mallory")
    other = await join(url)
    await done(server, "POST", admin.BAN_PATH, {"name": "Mallory", "reason": "abuse", "seconds": 3})
    # Told why, and how long it has left.
    banned_for_a_while = re.compile(r"banned: abuse \([1-3] s left\)")
    code, reason = await closed_with(banned)
    assert code == CloseCode.BANNED and banned_for_a_while.fullmatch(reason), reason
    assert await other.recv() == format_kick("Mallory", reason)
    # Accepted, then closed the same way: the name, in any case, and the token that held it.
    resume = join_query(JoinRequest(resume=banned.token))
    for again in (
        await refused(f"{url}?name=mallory"),
        await refused(f"{url}?{resume}", subprotocols=["chat.v2"]),
    ):
        assert again[0] == CloseCode.BANNED and banned_for_a_while.fullmatch(again[1]), again
    listed = (await ask(server, "GET", admin.BANS_PATH)).body["bans"]
    assert [(b["name"], b["reason"], b["by"]) for b in listed] == [("Mallory", "abuse", "ops")]
    # It ends by itself: the token takes its name back.
    deadline = time.monotonic() + 10
    while True:
        try:
            back = await join_v2(url, resume)
            break
        except (ConnectionClosed, AssertionError):
            assert time.monotonic() < deadline, "the ban did not end"
            await asyncio.sleep(0.2)
    assert back.name == "Mallory"
    assert (await ask(server, "GET", admin.BANS_PATH)).body == {"bans": []}
    await back.close()
    await other.close()


async def test_an_unban_lets_the_name_back(server: RunningServer) -> None:
    url = server.chat_url(fresh_room())
    await done(server, "POST", admin.BAN_PATH, {"name": "Trudy", "reason": "x"})
    assert await refused(f"{url}?name=Trudy") == (CloseCode.BANNED, "banned: x")
    await done(server, "DELETE", admin.BAN_PATH, {"name": "Trudy"})
    back = await join(f"{url}?name=Trudy")
    assert back.name == "Trudy"
    await back.close()
    assert (await ask(server, "DELETE", admin.BAN_PATH, {"name": "Trudy"})).status == 404


async def test_an_address_ban_keeps_that_address_out_and_no_other(
    server: RunningServer,
) -> None:
    url = server.chat_url(fresh_room())
    inside = await join(url, local_addr=("127.0.0.5", 0))
    await done(server, "POST", admin.BAN_PATH, {"address": "127.0.0.4/31", "reason": "botnet"})
    assert await closed_with(inside) == (CloseCode.BANNED, "banned: botnet")
    assert await refused(url, local_addr=("127.0.0.4", 0)) == (CloseCode.BANNED, "banned: botnet")
    elsewhere = await join(url, local_addr=("127.0.0.6", 0))
    await elsewhere.ws.send("fine")
    assert await elsewhere.recv() == f"{elsewhere.name} :: fine"
    await elsewhere.close()


# --- mutes and rooms ----------------------------------------------------------------------


async def test_a_muted_member_is_refused_and_never_heard(server: RunningServer) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    muted, listener = await join(url), await join(url)
    v2_muted = await join_v2(url)
    await muted.recv()
    await muted.recv()  # the others' joins
    await listener.recv()
    for who in (muted.name, v2_muted.name):
        await done(
            server, "POST", admin.MUTE_PATH, {"room": room, "name": who, "reason": "cool off"}
        )
    # Each learns it at once, and again at its next message, which nobody hears.
    told = format_error("you are muted in this room: cool off")
    assert await muted.recv() == told
    notice = (await v2_muted.recv_until(lambda f: f.get("type") == "error"))[-1]
    assert notice == {"type": "error", "text": "you are muted in this room: cool off"}
    await muted.ws.send("can you hear me")
    assert await muted.recv() == told
    await v2_muted.send("and me", "n1")
    error = (await v2_muted.recv_until(lambda f: f.get("type") == "error"))[-1]
    assert (error["text"], error["nonce"]) == ("you are muted in this room: cool off", "n1")
    await listener.ws.send("quiet here")
    assert await listener.recv() == f"{listener.name} :: quiet here"  # nothing of theirs before
    await done(server, "DELETE", admin.MUTE_PATH, {"room": room, "name": muted.name})
    unmuted = await muted.recv_until(lambda f: f.startswith("error: "))
    assert unmuted[-1] == format_error("you are no longer muted in this room")
    await muted.ws.send("back")
    assert await listener.recv() == f"{muted.name} :: back"
    for member in (muted, listener, v2_muted):
        await member.close()


async def test_a_muted_members_typing_is_not_passed_on(server: RunningServer) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    muted, listener = await join_v2(url), await join_v2(url)
    await done(server, "POST", admin.MUTE_PATH, {"room": room, "name": muted.name})
    await muted.recv_until(lambda f: f.get("type") == "error")
    await muted.ws.send(TYPING_FRAME)
    await muted.ws.send("still muted")  # refused: its error says the typing was read first
    await muted.recv_until(lambda f: f.get("type") == "error")
    await listener.send("anyone typing?", "n1")
    heard = await listener.recv_until(lambda f: f.get("type") == "ack")
    assert [f for f in heard if f["type"] == "typing"] == []
    await muted.close()
    await listener.close()


async def test_a_mute_and_a_ban_follow_the_token_through_a_nick_change(
    server: RunningServer,
) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    muted = await join_v2(url, f"name=Mute{secrets.token_hex(3)}")
    await done(server, "POST", admin.MUTE_PATH, {"room": room, "name": muted.name})
    new_name = f"Free{secrets.token_hex(3)}"
    await muted.ws.send(change_nick(new_name))
    await muted.recv_until(lambda f: f.get("type") == "nick")
    await muted.send("under my new name", "n1")
    error = (await muted.recv_until(lambda f: f.get("type") == "error"))[-1]
    assert error["text"] == "you are muted in this room"
    # Nobody takes a banned name by a nick change either.
    await done(server, "POST", admin.BAN_PATH, {"name": "Villain"})
    other = await join_v2(url)
    await other.ws.send(change_nick("villain"))
    error = (await other.recv_until(lambda f: f.get("type") == "error"))[-1]
    assert error["text"] == "villain is banned from this server"
    await muted.close()
    await other.close()


async def test_a_rooms_topic_reaches_joiners_and_members(server: RunningServer) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    early = await join(url)
    await done(server, "POST", admin.room_path(room), {"topic": "release day"})
    assert await early.recv() == format_topic("release day")
    text_joiner = await join(url)  # its join notice, then the topic
    assert await text_joiner.recv() == format_topic("release day")
    v2_joiner = await join_v2(url)
    assert v2_joiner.welcome["topic"] == "release day"
    await done(server, "POST", admin.room_path(room), {"topic": None})
    assert await text_joiner.recv_until(lambda f: f == format_topic(None))
    topic = (await v2_joiner.recv_until(lambda f: f.get("type") == "topic"))[-1]
    assert topic["topic"] is None
    for member in (early, text_joiner, v2_joiner):
        await member.close()


async def test_every_member_is_told_when_slow_mode_starts_and_ends(server: RunningServer) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    text_member, v2_member = await join(url), await join_v2(url)
    await text_member.recv()  # the other's join
    await done(server, "POST", admin.room_path(room), {"slow": 5})
    assert await text_member.recv() == format_error("slow mode: one message every 5 s")
    told = await v2_member.recv_until(lambda f: f.get("type") == "error")
    assert told[-1]["text"] == "slow mode: one message every 5 s"
    await done(server, "POST", admin.room_path(room), {"topic": "same slow"})  # slow unchanged
    await done(server, "POST", admin.room_path(room), {"slow": 0})
    assert await text_member.recv() == format_topic("same slow")
    assert await text_member.recv() == format_error("slow mode is off")
    await text_member.close()
    await v2_member.close()


async def test_slow_mode_allows_one_message_per_member_per_interval(server: RunningServer) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    await done(server, "POST", admin.room_path(room), {"slow": 30})
    name = f"Slow{secrets.token_hex(3)}"
    one, two = await join(f"{url}?name={name}"), await join(url)
    await one.recv()
    await one.ws.send("first")
    await one.ws.send("second")
    await two.ws.send("mine")
    # Its refusal and the room's messages may come in either order (a Redis round trip).
    assert sorted([await one.recv() for _ in range(3)]) == sorted(
        [
            f"{name} :: first",
            format_error("slow mode: one message every 30 s"),
            f"{two.name} :: mine",
        ]
    )
    # Coming back under the same name does not start the wait afresh.
    await one.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            again = await join(f"{url}?name={name}")
            break
        except (ConnectionClosed, AssertionError):  # its name not yet free
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    await again.ws.send("third")
    assert await again.recv() == format_error("slow mode: one message every 30 s")
    await again.close()
    await two.close()


async def test_a_locked_room_refuses_new_joins_and_keeps_its_members(
    server: RunningServer,
) -> None:
    room = fresh_room()
    url = server.chat_url(room)
    named = f"Texter{secrets.token_hex(3)}"
    member = await join(f"{url}?name={named}")
    kept, renamed, kicked = await join_v2(url), await join_v2(url), await join_v2(url)
    locked = await done(server, "POST", admin.room_path(room), {"locked": True})
    assert locked["members"] == 3  # the tokens that may come back (a text client has none)
    assert await refused(url) == (CloseCode.POLICY_VIOLATION, "room locked")
    await member.ws.send("still in")
    await member.recv_until(lambda f: f == f"{member.name} :: still in")
    # A member whose connection drops (a restart, a lost link) comes back with its token,
    # also under a name it changed to meanwhile; a member kicked while locked does not.
    await kept.close()
    back = await join_v2(url, resume_query(kept))
    assert back.name == kept.name
    new_name = f"Renamed{secrets.token_hex(3)}"
    await renamed.ws.send(change_nick(new_name))
    await renamed.recv_until(lambda f: f.get("type") == "nick")
    await renamed.close()
    renamed_token = f"{new_name}.{renamed.token.partition('.')[2]}"
    renamed_back = await join_v2(url, join_query(JoinRequest(resume=renamed_token)))
    assert renamed_back.name == new_name
    await done(server, "POST", admin.KICK_PATH, {"room": room, "name": kicked.name})
    assert (await closed_with(kicked))[0] == CloseCode.KICKED
    assert await refused(f"{url}?{resume_query(kicked)}", subprotocols=[SUBPROTOCOL_V2]) == (
        CloseCode.POLICY_VIOLATION,
        "room locked",
    )
    # Nobody new under a member's name: the text member's is free once it left.
    await member.close()
    assert await refused(f"{url}?name={named}") == (CloseCode.POLICY_VIOLATION, "room locked")
    await done(server, "POST", admin.room_path(room), {"locked": False})
    again = await join(url)
    await again.close()
    await back.close()
    await renamed_back.close()


# --- moderators ---------------------------------------------------------------------------


async def test_a_moderator_token_acts_in_its_rooms_only(server: RunningServer) -> None:
    mine, other = fresh_room(), fresh_room()
    made = await done(server, "POST", admin.TOKENS_PATH, {"label": "mia", "rooms": [mine]})
    token = made["token"]
    member = await join(server.chat_url(mine))
    kicked = await ask(
        server, "POST", admin.KICK_PATH, {"room": mine, "name": member.name}, token=token
    )
    assert kicked.ok
    assert await closed_with(member) == (CloseCode.KICKED, "kicked: ")
    outside = await ask(server, "POST", admin.KICK_PATH, {"room": other, "name": "x"}, token=token)
    assert (outside.status, outside.detail) == (403, f"mia may not act in {other}")
    everywhere = await ask(server, "POST", admin.BAN_PATH, {"name": "Eve"}, token=token)
    assert everywhere.status == 403
    minting = await ask(
        server, "POST", admin.TOKENS_PATH, {"label": "x", "rooms": [mine]}, token=token
    )
    assert minting.status == 403
    listed = (await ask(server, "GET", admin.TOKENS_PATH)).body["tokens"]
    assert listed == [{"label": "mia", "role": "moderator", "rooms": [mine]}]
    assert token not in str(listed)
    await done(server, "DELETE", admin.TOKENS_PATH + "/mia", {})
    revoked = await ask(server, "GET", admin.room_path(mine), token=token)
    assert revoked.status == 401


@pytest.mark.memory_only
async def test_every_action_is_logged_with_who_did_it_and_why(server: RunningServer) -> None:
    room = fresh_room()
    member = await join(server.chat_url(room))
    await member.ws.send("secret words")
    await member.recv()
    await done(server, "POST", admin.KICK_PATH, {"room": room, "name": member.name, "reason": "r1"})
    wait_until(lambda: "admin action=kick" in server.log())
    line = next(line for line in server.log().splitlines() if "admin action=kick" in line)
    assert f"by=ops room={room} name={member.name} reason=r1" in line
    assert "secret words" not in server.log()


@pytest.mark.memory_only
async def test_the_command_line_speaks_the_same_api(
    server: RunningServer, token_file: Path, cli: Cli, tmp_path: Path
) -> None:
    room = fresh_room()
    as_admin = ["admin", "--server", server.http_url, "--token-file", str(token_file)]
    made = cli(*as_admin, "token", "create", "--label", "shell", "--room", room)
    assert made.returncode == 0, made.stderr
    moderator = tmp_path / "moderator-token"
    moderator.write_text(json.loads(made.stdout)["token"] + "\n")
    as_moderator = ["admin", "--server", server.http_url, "--token-file", str(moderator)]
    member = await join(server.chat_url(room))
    kicked = cli(*as_moderator, "kick", member.name, "--room", room, "--reason", "from a shell")
    assert kicked.returncode == 0, kicked.stderr
    assert await closed_with(member) == (CloseCode.KICKED, "kicked: from a shell")
    refused_ban = cli(*as_moderator, "ban", "Zed")
    assert refused_ban.returncode == 1
    assert "shell may not act in every room" in refused_ban.stderr
    assert cli(*as_admin, "ban", "Zed", "--seconds", "60", "--reason", "r").returncode == 0
    bans = json.loads(cli(*as_admin, "bans").stdout)["bans"]
    assert [(ban["name"], ban["reason"]) for ban in bans] == [("Zed", "r")]
    settings = cli(*as_moderator, "room", room, "--topic", "hello", "--lock")
    assert json.loads(settings.stdout) == {
        "room": room,
        "topic": "hello",
        "slow": 0,
        "locked": True,
        "members": 0,
    }
    unreachable = cli(
        "admin", "--server", "http://127.0.0.1:1", "--token-file", str(moderator), "bans"
    )
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    # The options after the action too; the server's port as `run` reads it; the admin
    # command's own usage when something is missing (it printed the whole program's).
    after = cli("admin", "bans", "--server", server.http_url, "--token-file", str(token_file))
    assert after.returncode == 0 and json.loads(after.stdout)["bans"], after.stderr
    by_port = cli(
        "admin",
        "bans",
        env={"CHAT_SERVER_PORT": str(server.port), "CHAT_SERVER_ADMIN_TOKEN_FILE": str(token_file)},
    )
    assert by_port.returncode == 0, by_port.stderr
    tokenless = cli("admin", "bans", "--server", server.http_url)
    assert tokenless.returncode == 2
    assert tokenless.stderr.startswith("usage: chat-server admin "), tokenless.stderr
    # Read by a reader that stops (`| head`): no traceback.
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat_server", *as_admin, "bans"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    said = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 141 and "Traceback" not in said, said


# --- across processes ---------------------------------------------------------------------


@requires_redis
async def test_bans_and_kicks_reach_every_process(token_file: Path) -> None:
    with running_cluster(3, admin_token_file=token_file, rate_limit=0) as cluster:
        one, two, three = cluster.nodes
        room = fresh_room()
        on_three = await join(three.chat_url(room))
        await done(two, "POST", admin.KICK_PATH, {"room": room, "name": on_three.name})
        assert (await closed_with(on_three))[0] == CloseCode.KICKED
        await done(one, "POST", admin.BAN_PATH, {"name": "Oscar", "reason": "cluster"})
        assert await refused(f"{two.chat_url(room)}?name=Oscar") == (
            CloseCode.BANNED,
            "banned: cluster",
        )
        await done(one, "POST", admin.room_path(room), {"topic": "kept"})
        # A process that starts later, or restarts, has every rule from the broker.
        restarted = three.restart()
        cluster.nodes[2] = restarted  # stopped with the cluster
        joiner = await join_v2(restarted.chat_url(room))
        assert joiner.welcome["topic"] == "kept"
        await joiner.close()
