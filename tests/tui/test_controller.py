"""The controller's policies without a screen: what spans rooms, decided where it is testable.

The connections here play the controller's ``Connection`` seam (a real one needs a server and
is tested in test_connection.py; the app with real servers in test_app.py and the rest); the
host runs jobs as asyncio tasks and counts the bells.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest

from chat_protocol.frames import Frame, FrameKind, Welcome
from chat_protocol.v1 import format_leave, format_message, parse_frame
from chat_protocol.v2 import TYPING_SHOWN
from chat_tui.commands import Join, Msg, Query
from chat_tui.config import Config
from chat_tui.controller import NOTIFY_BURST, NOTIFY_RATE, ChatController
from chat_tui.events import (
    Acked,
    ConnectionState,
    Event,
    NameAssigned,
    StateChanged,
    Unreadable,
    Welcomed,
)
from chat_tui.notify import Notice
from chat_tui.rooms import TYPISTS_KEPT, RoomState, typing_text

ME = "user_meeeee01"
PEER = "user_peeeer02"
T = datetime(2024, 5, 1, 9, 7)


class FakeConnection:
    """What a room's connection reports, played by the test."""

    def __init__(self, room: str, wake: Callable[[], object]) -> None:
        self.room = room
        self.name: str | None = None
        self.events: deque[Event] = deque()
        self.sent: list[tuple[str, str]] = []  # (send id, line)
        self.retried = 0
        self.typed = 0
        self.reads: list[int] = []
        self.aways: list[str | None] = []
        self.runs = 0
        self.fail_with: Exception | None = None
        self.closed = False
        self._wake = wake
        self._woken = False
        self._stop = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self.sent)

    def report(self, *events: Event) -> None:
        self.events.extend(events)
        if not self._woken:
            self._woken = True
            self._wake()

    def take(self, limit: int | None = None) -> list[Event]:
        self._woken = False
        taken = list(self.events)[:limit]
        for _ in taken:
            self.events.popleft()
        return taken

    def send(self, line: str) -> str:
        send_id = f"{self.room}-{len(self.sent) + 1}"
        self.sent.append((send_id, line))
        return send_id

    def retry_now(self) -> None:
        self.retried += 1

    def typing(self) -> None:
        self.typed += 1

    def read(self, offset: int) -> None:
        self.reads.append(offset)

    def away(self, message: str | None) -> bool:
        self.aways.append(message)
        return True

    def nick(self, name: str) -> bool:
        return False  # a connection without chat.v2

    async def run(self) -> None:
        self.runs += 1
        await self._stop.wait()
        if self.fail_with is not None:
            raise self.fail_with

    async def close(self) -> None:
        self.closed = True
        self._stop.set()

    def state(self, state: ConnectionState, **more: Any) -> None:
        self.report(StateChanged(state, state.value, **more))

    def joined(self, name: str = ME) -> None:
        self.state(ConnectionState.CONNECTED)
        self.name = name
        self.report(NameAssigned(name))


class Job:
    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    @property
    def is_finished(self) -> bool:
        return self.task.done()

    def cancel(self) -> None:
        self.task.cancel()


class Host:
    """Runs the controller's jobs as tasks, drains woken rooms on the next turn, counts bells."""

    def __init__(self) -> None:
        self.controller: ChatController | None = None
        self.notices: list[Notice] = []
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, work: Coroutine[Any, Any, None], *, group: str, exclusive: bool = False) -> Job:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.append(task)
        return Job(task)

    def wake(self, room: str) -> None:
        assert self.controller is not None
        asyncio.get_running_loop().call_soon(self.controller.drain, room)

    def alert(self, notice: Notice) -> None:
        self.notices.append(notice)

    @property
    def bells(self) -> int:
        return len(self.notices)


async def settle() -> None:
    """Let the queued wake-ups and the jobs' first steps run (no I/O is involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def world() -> Any:
    host = Host()
    connections: dict[str, FakeConnection] = {}

    def connect(url: str, room: str, wake: Callable[[], object]) -> FakeConnection:
        connections[room] = FakeConnection(room, wake)
        return connections[room]

    def make(
        *rooms: str, monotonic: Callable[[], float] = lambda: 100.0, **options: Any
    ) -> ChatController:
        options.setdefault("joins", "all")  # every join and leave in the log, as read here
        config = Config(server="ws://127.0.0.1:9", rooms=list(rooms), autostart=False, **options)
        controller = ChatController(
            config, host, connection_factory=connect, clock=lambda: T, monotonic=monotonic
        )
        host.controller = controller
        controller.start(list(rooms))
        return controller

    yield make, host, connections
    for task in host.tasks:
        task.cancel()
    await asyncio.gather(*host.tasks, return_exceptions=True)


async def test_a_room_back_retries_the_other_offline_rooms_at_once(world: Any) -> None:
    make, _, connections = world
    controller = make("a", "b", "c", "d")
    await settle()
    for room in "abc":
        connections[room].state(ConnectionState.OFFLINE, retry_in=30.0)
    connections["d"].state(ConnectionState.FAILED, retry_in=None)  # given up: not retried
    await settle()
    assert [controller.rooms[r].state for r in "abcd"] == [RoomState.OFFLINE] * 3 + [
        RoomState.FAILED
    ]

    connections["a"].joined()
    await settle()
    assert [connections[r].retried for r in "abcd"] == [0, 1, 1, 0]


async def test_quitting_waits_for_acks_then_quits(world: Any) -> None:
    make, _, connections = world
    controller = make("a")
    await settle()
    connections["a"].joined()
    await settle()
    controller.send(controller.rooms["a"], "last words")
    await settle()
    send_id, line = connections["a"].sent[0]

    quitting = asyncio.ensure_future(controller.quit(wait=5.0))
    await settle()
    assert not quitting.done()  # waiting for the ack
    connections["a"].sent.clear()
    connections["a"].report(Acked(send_id, line, 1, datetime(2024, 5, 1, 9, 7, tzinfo=UTC)))
    assert await asyncio.wait_for(quitting, 5.0) is True
    assert connections["a"].closed


async def test_quitting_with_messages_not_sent_asks_again(world: Any) -> None:
    make, _, connections = world
    controller = make("a", "b")
    await settle()
    connections["a"].joined()
    connections["b"].state(ConnectionState.OFFLINE, retry_in=30.0)
    await settle()
    controller.send(controller.rooms["a"], "no ack will come")
    controller.activate("b")
    controller.send(controller.rooms["b"], "offline")
    await settle()

    assert await controller.quit(wait=0.2) is False
    said = [entry.text for entry in controller.rooms["b"].scrollback]
    assert (
        said[-1] == "2 messages are not confirmed by the server yet (pending in a, b); "
        "ctrl+q again quits without waiting (what was sent may still arrive)"
    )
    assert not connections["a"].closed
    assert await controller.quit(wait=0.2) is True  # asked again: it quits
    assert connections["a"].closed and connections["b"].closed


async def offline_room(world: Any) -> tuple[ChatController, dict[str, FakeConnection]]:
    """A controller of one room, "a", that lost its connection and waits to retry."""
    make, _, connections = world
    controller = make("a")
    await settle()
    connections["a"].state(ConnectionState.OFFLINE, retry_in=30.0)
    await settle()
    return controller, connections


async def test_a_new_message_makes_quitting_warn_again(world: Any) -> None:
    controller, connections = await offline_room(world)
    controller.send(controller.rooms["a"], "one")
    assert await controller.quit(wait=0.1) is False
    controller.send(controller.rooms["a"], "two")
    assert await controller.quit(wait=0.1) is False
    assert not connections["a"].closed


@pytest.mark.parametrize("bell", [True, False])
async def test_a_mention_out_of_sight_rings_once_per_burst(world: Any, bell: bool) -> None:
    make, host, connections = world
    # Ten seconds between messages: never within the notifications' bound (a storm's test).
    controller = make("here", "there", bell=bell, monotonic=itertools.count(100, 10).__next__)
    await settle()
    for room in ("here", "there"):
        connections[room].joined()
    await settle()

    def say(room: str, text: str) -> None:
        connections[room].report(parse_frame(format_message(PEER, text)))

    say("there", "no mention")
    await settle()
    assert host.bells == 0
    say("there", f"{ME}: look")
    say("there", f"{ME}: and here")  # the same burst: one bell
    await settle()
    assert host.bells == (1 if bell else 0)
    if bell:  # of the burst's newest mention: the room, the sender and the text
        assert host.notices[0] == Notice("there", f"{PEER}: {ME}: and here")
    say("here", f"{ME}: in view")  # the active room, the terminal focused: no bell
    await settle()
    assert host.bells == (1 if bell else 0)
    controller.focus(False)  # the terminal window lost the focus
    say("here", f"still {ME}?")
    await settle()
    assert host.bells == (2 if bell else 0)
    assert controller.rooms["here"].unread == 1 and controller.rooms["there"].mentions == 2


async def test_a_storm_of_paced_messages_notifies_once_a_room_in_a_while(world: Any) -> None:
    """A server that paces its messages (one every 0.1 s) made a notification of each: 51
    in 5 s. One a room every NOTIFY_ROOM_EVERY seconds; of all rooms, NOTIFY_BURST at once
    then NOTIFY_RATE a second."""
    make, host, connections = world
    now = [100.0]
    rooms = [f"r{n}" for n in range(NOTIFY_BURST + 3)]
    controller = make(
        "here", *rooms, notify_rooms=dict.fromkeys(rooms, "all"), monotonic=lambda: now[0]
    )
    await settle()
    for room in ("here", *rooms):
        connections[room].joined()
    await settle()
    for n in range(60):  # 6 s of them in one room
        now[0] = 100 + n / 10
        connections["r0"].report(parse_frame(format_message(PEER, f"storm {n}")))
        await settle()
    assert [n.body for n in host.notices] == [f"{PEER}: storm 0", f"{PEER}: storm 50"]
    for room in rooms[1:]:  # then one in each other room at once: a burst's worth
        connections[room].report(parse_frame(format_message(PEER, f"in {room}")))
        await settle()
    # The storm's second came with the bucket full again (5 s at NOTIFY_RATE): one spent.
    assert len(host.notices) == 2 + NOTIFY_BURST - 1
    now[0] += 1 / NOTIFY_RATE
    connections[rooms[-1]].report(parse_frame(format_message(PEER, "a while later")))
    await settle()
    assert host.notices[-1].body == f"{PEER}: a while later"
    assert controller.rooms["r0"].unread == 60  # counted all the same


async def test_highlight_words_and_the_room_levels_decide_what_notifies(world: Any) -> None:
    make, host, connections = world
    controller = make(
        "here",
        "ops",
        "random",
        "quiet",
        highlight=["deploy"],
        notify_rooms={"ops": "all", "quiet": "none"},
        monotonic=itertools.count(100, 10).__next__,
    )
    await settle()
    for room in ("here", "ops", "random", "quiet"):
        connections[room].joined()
    await settle()

    async def said(room: str, text: str) -> None:
        connections[room].report(parse_frame(format_message(PEER, text)))
        await settle()

    short = ME.removeprefix("user_")  # "meeeee01" is a mention of "user_meeeee01"
    await said("random", "nothing for you")
    assert host.notices == []
    await said("random", f"{short}: ping")
    await said("random", "the DEPLOY is done")  # a highlight word, any case
    await said("random", "redeployed")  # a word of its own only
    await said("ops", "anything at all")  # ops notifies of every message
    await said("quiet", f"{ME}: even a mention")  # quiet notifies of nothing
    assert [n.body for n in host.notices] == [
        f"{PEER}: {short}: ping",
        f"{PEER}: the DEPLOY is done",
        f"{PEER}: anything at all",
    ]
    assert controller.rooms["quiet"].mentions == 1  # still counted as a mention


async def test_a_flood_is_applied_in_slices_with_the_rest_after(world: Any) -> None:
    make, _, connections = world
    controller = make("a")
    await settle()
    connections["a"].joined()
    await settle()
    frames = [parse_frame(format_message(PEER, f"line {n}")) for n in range(1200)]
    connections["a"].report(*frames)
    await asyncio.sleep(0)  # the first wake-up's drain: one slice
    texts = [entry.text for entry in controller.rooms["a"].scrollback]
    assert "line 499" in texts and "line 500" not in texts
    await settle()
    texts = [entry.text for entry in controller.rooms["a"].scrollback]
    assert texts[-1] == "line 1199" and len([t for t in texts if t.startswith("line")]) == 1200


async def test_a_connection_that_dies_says_so_and_ctrl_r_starts_it_again(world: Any) -> None:
    make, _, connections = world
    controller = make("a")
    await settle()
    connection = connections["a"]
    connection.fail_with = OverflowError("cannot convert float infinity to integer")
    connection._stop.set()  # its run ends: with a crash
    await settle()
    room = controller.rooms["a"]
    assert room.state is RoomState.FAILED
    assert "connection stopped: OverflowError" in room.scrollback[-1].text

    connection.fail_with = None
    connection._stop.clear()
    controller.reconnect()  # ctrl+r: its job is over, so a new one runs it again
    await settle()
    assert connection.runs == 2
    assert "reconnecting now: a" in room.scrollback[-1].text


async def test_typing_is_said_at_most_every_3_s_per_room_and_never_for_a_command(
    world: Any,
) -> None:
    make, _, connections = world
    now = [100.0]
    controller = make("a", "b", monotonic=lambda: now[0])
    await settle()
    a = connections["a"]
    for line in ("h", "he", "hel"):
        controller.typed(line)
    assert a.typed == 1  # once, however many keys
    now[0] += 2.9
    controller.typed("hell")
    assert a.typed == 1
    now[0] += 0.1
    controller.typed("/join x")  # a command is not chat
    controller.typed("")  # an emptied box is not typing
    assert a.typed == 1
    controller.typed("//literally")
    assert a.typed == 2
    controller.activate("b")  # another room hears it at once
    controller.typed("x")
    assert (a.typed, connections["b"].typed) == (2, 1)


async def test_typing_off_in_the_config_says_nothing_and_shows_nothing(world: Any) -> None:
    make, _, connections = world
    controller = make("a", typing=False)
    await settle()
    controller.typed("hello")
    connections["a"].joined()
    connections["a"].report(Frame(FrameKind.TYPING, "", "alice"))
    await settle()
    assert connections["a"].typed == 0
    assert controller.rooms["a"].typists(100.0) == []


async def test_who_is_typing_until_they_speak_or_6_s_pass(world: Any) -> None:
    make, _, connections = world
    now = [100.0]
    controller = make("a", monotonic=lambda: now[0])
    await settle()
    a = connections["a"]
    a.joined()
    a.report(*(Frame(FrameKind.TYPING, "", who) for who in ("alice", "bob", ME)))
    await settle()
    room = controller.rooms["a"]
    assert room.typists(now[0]) == ["alice", "bob"]  # never ourselves
    assert typing_text(room.typists(now[0])) == "alice and bob are typing…"
    a.report(parse_frame(format_message("alice", "done")))
    await settle()
    assert typing_text(room.typists(now[0])) == "bob is typing…"
    now[0] += TYPING_SHOWN
    assert room.typists(now[0]) == []
    a.report(*(Frame(FrameKind.TYPING, "", f"p{i}") for i in range(30)))
    await settle()
    assert len(room.typists(now[0])) == TYPISTS_KEPT  # a hostile server's flood is bounded
    assert typing_text(room.typists(now[0])) == f"{TYPISTS_KEPT} people are typing…"
    a.report(parse_frame(format_leave("p29")))  # gone: no longer typing
    await settle()
    assert "p29" not in room.typists(now[0])
    # Names too long for a narrow status line are said by count.
    long_a, long_b = "A" * 24, "B" * 24
    assert typing_text([long_a]) == f"{long_a} is typing…"
    assert typing_text([long_a, long_b]) == "2 people are typing…"


def welcome(read: int | None, offset: int = 5) -> Welcomed:
    history = tuple(
        Frame(FrameKind.MESSAGE, f"m{n}", PEER, offset=n, time=T.replace(tzinfo=UTC))
        for n in range(1, offset + 1)
    )
    body = Welcome("a", ME, "e1", offset, f"{ME}.secret", None, False, len(history), read)
    return Welcomed(body, history, None)


async def welcomed_in_a(world: Any) -> tuple[ChatController, FakeConnection]:
    """A controller of room "a", connected and welcomed (chat.v2), and a's connection."""
    make, _, connections = world
    controller = make("a")
    await settle()
    a = connections["a"]
    a.state(ConnectionState.CONNECTED)
    a.report(welcome(read=None))
    await settle()
    return controller, a


async def test_what_the_user_saw_is_reported_once_a_second_at_most_once(world: Any) -> None:
    controller, a = await welcomed_in_a(world)
    controller.report_read(following=False)  # scrolled up: not seen
    assert a.reads == []
    controller.report_read(following=True)
    controller.report_read(following=True)  # nothing newer since
    assert a.reads == [5]
    a.report(parse_frame(format_message(PEER, "six")))  # a text frame: no offset
    await settle()
    controller.report_read(following=True)
    assert a.reads == [5]


async def test_a_kept_read_position_makes_the_rest_unread(world: Any) -> None:
    make, _, connections = world
    controller = make("a", "b")
    await settle()
    b = connections["b"]
    b.state(ConnectionState.CONNECTED)
    b.report(welcome(read=3))
    await settle()
    room = controller.rooms["b"]  # not looked at: counted
    assert (room.unread, room.read_reported) == (2, 3)
    controller.activate("b")
    await settle()
    assert room.scrollback.marker is not None and room.scrollback.marker.text == "m4"


async def test_idle_for_away_after_minutes_says_away_and_a_key_says_back(world: Any) -> None:
    make, _, connections = world
    now = [100.0]
    controller = make("a", monotonic=lambda: now[0], away_after=5)
    await settle()
    a = connections["a"]
    a.state(ConnectionState.CONNECTED)
    await settle()
    now[0] += 299
    controller.idle_check()
    assert a.aways == []
    now[0] += 1
    controller.idle_check()
    controller.idle_check()  # once
    assert a.aways == ["idle for 5 minutes"]
    controller.typed("h")  # a key: back
    assert a.aways == ["idle for 5 minutes", None]
    controller.typed("he")
    assert a.aways == ["idle for 5 minutes", None]


async def test_an_idle_away_of_the_last_run_ends_at_the_first_key(world: Any) -> None:
    """Marked away by idling, the app quit and started again: the server kept the away, the
    app's own flag was new, and a key cleared it on our screen only (found by a new-user run).
    An away we said ourselves stays."""
    make, _, connections = world
    controller = make("a", away_after=1)
    await settle()
    a = connections["a"]
    a.joined()
    a.report(Frame(FrameKind.AWAY, "idle for 1 minute", name=ME))
    await settle()
    controller.typed("x")
    assert a.aways == [None]
    a.report(Frame(FrameKind.AWAY, "lunch", name=ME))
    await settle()
    controller.typed("xy")
    assert a.aways == [None]


async def test_away_after_0_never_says_away(world: Any) -> None:
    make, _, connections = world
    now = [100.0]
    controller = make("a", monotonic=lambda: now[0])
    await settle()
    connections["a"].state(ConnectionState.CONNECTED)
    await settle()
    now[0] += 10**6
    controller.idle_check()
    assert connections["a"].aways == []


async def test_a_nick_with_no_room_to_ask_says_why(world: Any) -> None:
    controller, connections = await offline_room(world)
    assert not controller.nick("Hal")
    said = controller.rooms["a"].scrollback[-1].text
    assert said == "/nick needs the server, and no room is connected now: try again once one is"
    connections["a"].joined()  # back, but its server has no chat.v2
    await settle()
    assert not controller.nick("Hal")
    said = controller.rooms["a"].scrollback[-1].text
    assert said == "/nick needs a room connected to a server that speaks chat.v2"


async def test_a_conversation_is_one_whatever_the_case_the_name_is_typed_in(world: Any) -> None:
    """/query bob, /query Bob and /msg BOB are one conversation (a name is one name whatever
    its case): they were three, whose connections replaced each other at the server."""
    make, _, connections = world
    controller = make("general")
    await settle()
    assert controller.join("@bob")
    assert controller.join("@Bob")
    assert controller.open_conversation("BOB") is controller.rooms["@bob"]
    await settle()
    assert [name for name in controller.rooms if name.startswith("@")] == ["@bob"]
    assert controller.active == "@bob"
    assert [room for room in connections if room.startswith("@")] == ["@bob"]


async def test_a_server_opens_conversations_within_bounds(world: Any) -> None:
    """3,000 "someone wrote to you" frames from a hostile server opened 3,000 conversations,
    each a connection (400 MB, 92 % CPU after the flood). Ten open at once, then one every
    6 s, at most 100 in all; the others are named once a minute, for /query."""
    clock = [100.0]
    make, _, connections = world
    controller = make("general", monotonic=lambda: clock[0])
    await settle()
    connections["general"].joined()
    wrote = [Frame(FrameKind.DIRECT, "", name=f"Spam{n:05d}") for n in range(3000)]
    connections["general"].report(*wrote)
    for _ in range(100):  # taken in slices, a turn each
        await settle()
        if not connections["general"].events:
            break
    await settle()
    opened = [name for name in controller.rooms if name.startswith("@")]
    assert opened == [f"@Spam{n:05d}" for n in range(10)]
    told = [e.text for e in controller.rooms["general"].scrollback if "not opened" in e.text]
    assert told == [
        "wrote to you, not opened (too many conversations at once): Spam00010, Spam00011, "
        "Spam00012, Spam00013, Spam00014 and 2985 more; /query NAME opens one"
    ]
    # Someone who already has a conversation is no new one; later, one more may open.
    connections["general"].report(Frame(FrameKind.DIRECT, "", name="Spam00003"))
    clock[0] += 6.0
    connections["general"].report(Frame(FrameKind.DIRECT, "", name="Friend"))
    await settle()
    assert [name for name in controller.rooms if name.startswith("@")][-1] == "@Friend"
    assert len([name for name in connections if name.startswith("@")]) == 11


async def test_a_run_of_frames_that_cannot_be_read_is_one_line(world: Any) -> None:
    """20,000 frames this client cannot read (a hostile server's) were 20,000 lines, each
    laid out: keys took 1.6 s to show. A run of them is one line, counted on."""
    make, _, connections = world
    controller = make("general")
    await settle()
    connections["general"].joined()
    connections["general"].report(*[Unreadable(40, f'{{"type":"nick" {n}') for n in range(2000)])
    for _ in range(100):  # taken in slices, a turn each
        await settle()
        if not connections["general"].events:
            break
    lines = [e.text for e in controller.rooms["general"].scrollback if "cannot be read" in e.text]
    assert lines == [
        'the server sent a frame that cannot be read (40 bytes): {"type":"nick" 0… '
        "(and 1999 more since)"
    ]
    # Something else between: the next run has a line of its own.
    connections["general"].report(Frame(FrameKind.MESSAGE, "hi", name=PEER))
    connections["general"].report(Unreadable(3, "bad"))
    await settle()
    texts = [e.text for e in controller.rooms["general"].scrollback]
    assert texts[-1] == "the server sent a frame that cannot be read (3 bytes): bad"


async def test_a_conversation_with_oneself_is_refused(world: Any) -> None:
    """/join @OURNAME showed a members panel "alicia (you) / alicia (you)" that never settled
    (a new-user run): there is nobody to talk to."""
    make, _, connections = world
    controller = make("general")
    await settle()
    connections["general"].joined()
    await settle()
    for action in (Join(f"@{ME.upper()}"), Query(ME), Msg(ME, "hi me")):
        assert controller.run(action) is False
    said = [e.text for e in controller.rooms["general"].scrollback][-3:]
    assert said == [
        f"{n} is you: a conversation is with someone else" for n in (ME.upper(), ME, ME)
    ]
    assert not [room for room in controller.rooms if room.startswith("@")]


async def test_a_conversation_shows_its_person_away_as_a_shared_room_says(world: Any) -> None:
    """carol was "(away)" in #general's members panel and plain "carol" in @carol's (a
    new-user run): the conversation hears nothing of it until she answers."""
    make, _, connections = world
    controller = make("general")
    await settle()
    general = connections["general"]
    general.joined()
    general.report(Frame(FrameKind.JOIN, f"{PEER} joined the chat", name=PEER))
    general.report(Frame(FrameKind.AWAY, "lunch", name=PEER))
    await settle()
    talk = controller.open_conversation(PEER)
    assert talk.away_of() == {PEER: "lunch"}
    general.report(Frame(FrameKind.BACK, "", name=PEER))
    await settle()
    assert talk.away_of() == {}
    general.report(Frame(FrameKind.AWAY, "a walk", name=PEER))
    await settle()
    assert talk.away_of() == {PEER: "a walk"}
    # Said in #general's log, not again in the conversation's.
    assert not [e for e in talk.scrollback if "a walk" in e.text]


async def test_away_is_said_again_to_a_server_that_forgot_us(world: Any) -> None:
    """A welcome that did not resume our token (Redis restarted empty): the server does not
    know we are away, and every room showed us away but nobody else; said again. A resumed
    welcome (a mere reconnect) is not: the server still has it."""
    controller, a = await welcomed_in_a(world)
    assert controller.set_away("lunch")
    assert a.aways == ["lunch"]
    resumed = welcome(read=None)
    a.report(
        dataclasses.replace(resumed, welcome=dataclasses.replace(resumed.welcome, resumed=True))
    )
    await settle()
    assert a.aways == ["lunch"]
    a.report(welcome(read=None))  # resumed: False
    await settle()
    assert a.aways == ["lunch", "lunch"]
    assert controller.set_away(None)  # back: nothing to say again
    a.report(welcome(read=None))
    await settle()
    assert a.aways == ["lunch", "lunch", None]
