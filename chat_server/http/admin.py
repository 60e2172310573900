"""The admin API (``/admin/...``): kicks, bans, mutes, rooms' settings and moderator tokens,
for the operator (a token of ``--admin-token-file``) and moderators (tokens made here, limited
to their rooms). Installed only with ``--admin-token-file``: without it every ``/admin/`` path
is the 404 of a path that is not served.

Every decision goes to the broker (``Backend.keep_rule``, ``Backend.kick``), which tells every
node; each node enforces it on the connections it holds (``chat_server.governance``). Every
action is logged as one ``admin`` event: what, to whom, by which token's label, and why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from chat_protocol import admin, http, names, text
from chat_protocol.names import name_key
from chat_server import tokens
from chat_server.backends.base import Kick, Rule, RuleKind, RulesFull
from chat_server.governance import (
    RoomSettings,
    address_ban,
    covers,
    is_room_pattern,
    mute_key,
    name_ban,
    network_of,
    token_ban,
    token_mute,
)
from chat_server.node import Node
from chat_server.ops.settings import admin_tokens
from chat_server.signed import InvalidToken, bearer_token

log = logging.getLogger("chat_server")

MODERATOR_TOKEN_PREFIX = "mod_"
# The longest ban or mute: a year (longer is "until lifted": no seconds).
MAX_SECONDS = 366 * 24 * 3600


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Grant:
    """Who asks: a token's label, and the rooms it may act in (None: every room, an admin)."""

    label: str
    rooms: tuple[str, ...] | None

    @property
    def is_admin(self) -> bool:
        return self.rooms is None

    def covers(self, room: str | None) -> bool:
        if self.rooms is None:
            return True
        return room is not None and covers(self.rooms, room)


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _answer(status: int, detail: str) -> JSONResponse:
    # "admin": this API's own refusal, told apart from a server without the API (a 404).
    return JSONResponse({**http.error_body(detail), "admin": True}, status)


# --- reading a request --------------------------------------------------------------------


# The fields of each request's body.
_KICK: Final = frozenset({"name", "room", "reason"})
_BAN: Final = frozenset({"name", "address", "room", "seconds", "reason"})
_UNBAN: Final = frozenset({"name", "address", "room"})
_MUTE: Final = frozenset({"name", "room", "seconds", "reason"})
_UNMUTE: Final = frozenset({"name", "room"})
_ROOM: Final = frozenset({"topic", "slow", "locked"})
_TOKEN: Final = frozenset({"label", "role", "rooms"})


async def _body(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object, read up to MAX_BODY_BYTES (a longer declared length is
    refused before anything is read), of ``fields`` only: a misspelt one (``"lock"`` for
    ``"locked"``) is refused rather than answered with success and ignored."""
    too_big = f"a body is at most {admin.MAX_BODY_BYTES} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > admin.MAX_BODY_BYTES:
        raise Refused(413, too_big)
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > admin.MAX_BODY_BYTES:
                raise Refused(413, too_big)
    except ClientDisconnect:
        # Gone, or its body never came (the transport answered 408): nobody to answer.
        raise Refused(408, "the body did not come") from None
    if not data:
        return {}
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON (or nested too deeply)") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body is a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        known = ", ".join(sorted(fields))
        raise Refused(400, f"unknown field {unknown[0][:40]!r} (this request takes {known})")
    return body


def _text(body: dict[str, Any], key: str, limit: int, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise Refused(400, f"{key} is required")
        return None
    if not isinstance(value, str):
        raise Refused(400, f"{key} is text")
    clean = (text.sanitize(value.replace("\n", " ").replace("\t", " ")) or "").strip()
    if len(clean) > limit:
        raise Refused(400, f"{key} is at most {limit} characters")
    return clean


def _room(body: dict[str, Any], required: bool) -> str | None:
    room = body.get("room")
    if room is None and not required:
        return None
    if not isinstance(room, str) or not names.is_valid_room(room):
        raise Refused(400, "room must be a room name")
    return room


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not names.is_valid_name(name):
        raise Refused(400, "name must be a member's name")
    return name


def _expires(body: dict[str, Any]) -> float | None:
    seconds = body.get("seconds")
    if seconds is None or seconds == 0:
        return None
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 1 <= seconds <= MAX_SECONDS
    ):
        raise Refused(400, f"seconds must be a number from 1 to {MAX_SECONDS} (or 0: until lifted)")
    return time.time() + seconds


def _reason(body: dict[str, Any]) -> str:
    return _text(body, "reason", admin.MAX_REASON_CHARS) or ""


# --- the API ------------------------------------------------------------------------------


class AdminApi:
    def __init__(self, node: Node, token_file: str) -> None:
        self.node = node
        # (label, digest): compared digest to digest, in constant time, with every one.
        pairs = admin_tokens(token_file) if token_file else []
        self.admins = [(label, digest(token)) for label, token in pairs]

    def grant(self, request: Request) -> Grant:
        token = bearer_token(request.headers.raw)  # never ?token=: not for these
        if token is None:
            raise Refused(401, "an admin or moderator token is needed (Authorization: Bearer)")
        presented = digest(token)
        label = None
        for name, kept in self.admins:
            if hmac.compare_digest(presented, kept):
                label = name
        if label is not None:
            return Grant(label, None)
        rule = self.node.governance.moderator(presented)
        if rule is not None:
            return Grant(str(rule.value.get("label")), tuple(rule.value.get("rooms") or ()))
        verifier = self.node.verifier
        if verifier is not None and token.count(".") == 2:  # a JWT: its "mod" claim
            try:
                signed = verifier.verify(token)
            except InvalidToken as exc:
                raise Refused(401, str(exc)) from None
            return Grant(signed.name, signed.mod)
        raise Refused(401, "not a token of this server")

    async def keep(self, rule: Rule) -> None:
        try:
            await self.node.backend.keep_rule(rule)
        except RulesFull:
            raise Refused(507, "the server keeps no more rules: lift some first") from None

    async def _with_token(
        self,
        kind: RuleKind,
        key: str,
        token_key: Callable[[str], str],
        value: dict[str, Any],
        expires: float | None,
    ) -> list[Rule]:
        """A rule on ``value["name"]``, and the same on the resume token that holds the name
        (``token_key`` of its id), so that a nick change does not escape it."""
        held = await self.node.backend.registry.holder(value["name"])
        if held is None or held.digest is None:
            return [Rule(kind, key, value, expires)]
        token_id = tokens.token_id(held.digest)
        value = {**value, "token": token_id}
        return [Rule(kind, key, value, expires), Rule(kind, token_key(token_id), value, expires)]

    async def _drop_with_token(
        self, kind: RuleKind, key: str, token_key: Callable[[str], str]
    ) -> bool:
        """Lift a rule on a name, and its twin on the token that held the name."""
        rule = next((r for r in self.node.governance.rules(kind) if r.key == key), None)
        lifted = await self.node.backend.drop_rule(kind, key)
        token_id = None if rule is None else rule.value.get("token")
        if token_id:
            await self.node.backend.drop_rule(kind, token_key(str(token_id)))
        return lifted

    def logged(self, grant: Grant, action: str, **what: Any) -> None:
        fields = " ".join(f"{key}=%s" for key in what)
        log.warning(f"admin action=%s by=%s {fields}", action, grant.label, *what.values())

    # --- kicks ----------------------------------------------------------------------------

    async def kick(self, request: Request) -> dict[str, Any]:
        grant, body = self.grant(request), await _body(request, _KICK)
        room = _room(body, required=False)
        self._covered(grant, room)
        name, why = _name(body), _reason(body)
        registry = self.node.backend.registry
        if room is not None:
            present = {name_key(member) for member in await registry.members(room)}
            if name_key(name) not in present:
                raise Refused(404, f"{name} is not in {room}")
        elif await registry.holder(name) is None:
            raise Refused(404, f"nobody is called {name}")
        settings = self.node.governance.room(room) if room is not None else None
        # Its token, looked up while it holds the name: kicked from a locked room, it is no
        # longer one of those who may come back.
        locked = settings is not None and settings.locked
        kicked = await self._tokens_of([name]) if locked else frozenset()
        await self.node.backend.kick(Kick(name, room, why))
        if settings is not None and settings.members & kicked:
            kept = replace(settings, members=settings.members - kicked)
            await self.keep(Rule(RuleKind.ROOM, room, kept.to_value()))
        self.logged(grant, "kick", room=room or "*", name=name, reason=why)
        return {"kicked": name, "room": room}

    # --- bans -----------------------------------------------------------------------------

    async def ban(self, request: Request) -> dict[str, Any]:
        grant, body = self.grant(request), await _body(request, _BAN)
        room = _room(body, required=False)
        self._covered(grant, room)
        why, expires = _reason(body), _expires(body)
        value: dict[str, Any] = {"reason": why, "by": grant.label, "room": room}
        rules = []
        if "address" in body and "name" in body:
            raise Refused(400, "a ban is of a name or of an address, not both")
        if "address" in body:
            network = network_of(str(body["address"]))
            if network is None:
                raise Refused(400, "address must be an address or a CIDR")
            value["address"] = str(network)
            rules.append(Rule(RuleKind.BAN, address_ban(room, network), value, expires))
            target = str(network)
        else:
            name = target = _name(body)
            rules = await self._with_token(
                RuleKind.BAN, name_ban(room, name), lambda t: token_ban(room, t),
                {**value, "name": name}, expires,
            )  # fmt: skip
        for rule in rules:
            await self.keep(rule)
        self.logged(
            grant, "ban", room=room or "*", target=target, seconds=body.get("seconds") or 0,
            reason=why,
        )  # fmt: skip
        return {"banned": target, "room": room, "expires": expires}

    async def unban(self, request: Request) -> dict[str, Any]:
        grant, body = self.grant(request), await _body(request, _UNBAN)
        room = _room(body, required=False)
        self._covered(grant, room)
        backend = self.node.backend
        if "address" in body and "name" in body:
            raise Refused(400, "a ban is of a name or of an address, not both")
        if "address" in body:
            network = network_of(str(body["address"]))
            if network is None:
                raise Refused(400, "address must be an address or a CIDR")
            target, key = str(network), address_ban(room, network)
            lifted = await backend.drop_rule(RuleKind.BAN, key)
        else:
            name = target = _name(body)
            lifted = await self._drop_with_token(
                RuleKind.BAN, name_ban(room, name), lambda t: token_ban(room, t)
            )
        if not lifted:
            raise Refused(404, f"no ban of {target} here")
        self.logged(grant, "unban", room=room or "*", target=target)
        return {"unbanned": target, "room": room}

    async def bans(self, request: Request) -> dict[str, Any]:
        grant = self.grant(request)
        shown = []
        for rule in self.node.governance.rules(RuleKind.BAN):
            room = rule.value.get("room")
            if " token:" in rule.key or not grant.covers(room):
                continue  # a token's ban is its name's, shown once
            entry = {
                k: rule.value[k]
                for k in ("name", "address", "room", "reason", "by")
                if k in rule.value
            }
            entry["expires"] = rule.expires
            shown.append(entry)
        return {"bans": shown}

    # --- mutes ----------------------------------------------------------------------------

    async def _in_a_room(
        self, request: Request, fields: frozenset[str]
    ) -> tuple[Grant, dict[str, Any], str, str]:
        """Who asks, the body, and the room (one the grant covers) and name it is about."""
        grant, body = self.grant(request), await _body(request, fields)
        room = _room(body, required=True)
        self._covered(grant, room)
        assert room is not None
        return grant, body, room, _name(body)

    async def mute(self, request: Request) -> dict[str, Any]:
        grant, body, room, name = await self._in_a_room(request, _MUTE)
        why, expires = _reason(body), _expires(body)
        value = {"room": room, "name": name, "reason": why, "by": grant.label}
        rules = await self._with_token(
            RuleKind.MUTE, mute_key(room, name), lambda t: token_mute(room, t), value, expires
        )
        for rule in rules:
            await self.keep(rule)
        self.logged(
            grant, "mute", room=room, name=name, seconds=body.get("seconds") or 0, reason=why
        )
        return {"muted": name, "room": room, "expires": expires}

    async def unmute(self, request: Request) -> dict[str, Any]:
        grant, _, room, name = await self._in_a_room(request, _UNMUTE)
        lifted = await self._drop_with_token(
            RuleKind.MUTE, mute_key(room, name), lambda t: token_mute(room, t)
        )
        if not lifted:
            raise Refused(404, f"{name} is not muted in {room}")
        self.logged(grant, "unmute", room=room, name=name)
        return {"unmuted": name, "room": room}

    async def _tokens_of(self, holders: list[str]) -> frozenset[str]:
        """The ids of the resume tokens that hold these names (none for a tokenless one)."""
        registry = self.node.backend.registry
        found = set()
        for name in holders:
            holder = await registry.holder(name)
            if holder is not None and holder.digest is not None:
                found.add(tokens.token_id(holder.digest))
        return frozenset(found)

    # --- rooms ----------------------------------------------------------------------------

    async def room(self, request: Request) -> dict[str, Any]:
        room = request.path_params["room"]
        grant = self.grant(request)
        if not names.is_valid_room(room):
            raise Refused(404, http.INVALID_ROOM_DETAIL)
        self._covered(grant, room)
        settings = self.node.governance.room(room)
        return {"room": room, **settings.shown()}

    async def set_room(self, request: Request) -> dict[str, Any]:
        room = request.path_params["room"]
        grant, body = self.grant(request), await _body(request, _ROOM)
        if not names.is_valid_room(room):
            raise Refused(404, http.INVALID_ROOM_DETAIL)
        self._covered(grant, room)
        before = self.node.governance.room(room)
        topic = _text(body, "topic", admin.MAX_TOPIC_CHARS) if "topic" in body else before.topic
        slow = body.get("slow", before.slow)
        if not isinstance(slow, int | float) or isinstance(slow, bool) or not 0 <= slow <= 3600:
            raise Refused(400, "slow must be seconds from 0 (off) to 3600")
        locked = body.get("locked", before.locked)
        if not isinstance(locked, bool):
            raise Refused(400, "locked must be true or false")
        members = before.members
        if locked and not before.locked:
            # Its members stay, and come back if their connections drop: by their tokens.
            members = await self._tokens_of(await self.node.backend.registry.members(room))
        after = RoomSettings(topic or None, float(slow), locked, members if locked else frozenset())
        if after == RoomSettings():
            await self.node.backend.drop_rule(RuleKind.ROOM, room)
        else:
            await self.keep(Rule(RuleKind.ROOM, room, after.to_value()))
        changed = {k: v for k, v in after.shown().items() if before.shown()[k] != v}
        self.logged(grant, "room", room=room, changed=",".join(changed) or "nothing")
        return {"room": room, **after.shown()}

    # --- moderator tokens -----------------------------------------------------------------

    async def create_token(self, request: Request) -> dict[str, Any]:
        grant, body = self.grant(request), await _body(request, _TOKEN)
        if not grant.is_admin:
            raise Refused(403, "only an admin token makes tokens")
        label = body.get("label")
        if not isinstance(label, str) or not names.is_valid_room(label):
            raise Refused(400, "label must be 1-64 of A-Z a-z 0-9 _ -")
        if body.get("role", admin.ROLE_MODERATOR) != admin.ROLE_MODERATOR:
            raise Refused(400, f"role must be {admin.ROLE_MODERATOR}")
        rooms = body.get("rooms")
        if not isinstance(rooms, list) or not rooms or not all(map(is_room_pattern, rooms)):
            raise Refused(400, "rooms must be a list of room names (or prefixes ending in *)")
        token = MODERATOR_TOKEN_PREFIX + secrets.token_urlsafe(24)
        value = {"label": label, "role": admin.ROLE_MODERATOR, "rooms": rooms, "by": grant.label}
        await self.keep(Rule(RuleKind.TOKEN, digest(token), value))  # only its digest is kept
        self.logged(grant, "token", label=label, rooms=",".join(rooms))
        return {"token": token, "label": label, "role": admin.ROLE_MODERATOR, "rooms": rooms}

    async def tokens(self, request: Request) -> dict[str, Any]:
        if not self.grant(request).is_admin:
            raise Refused(403, "only an admin token lists tokens")
        return {
            "tokens": [
                {k: rule.value.get(k) for k in ("label", "role", "rooms")}
                for rule in self.node.governance.rules(RuleKind.TOKEN)
            ]
        }

    async def revoke_token(self, request: Request) -> dict[str, Any]:
        grant = self.grant(request)
        if not grant.is_admin:
            raise Refused(403, "only an admin token revokes tokens")
        label = request.path_params["label"]
        revoked = 0
        for rule in self.node.governance.rules(RuleKind.TOKEN):
            if rule.value.get("label") == label:
                revoked += await self.node.backend.drop_rule(RuleKind.TOKEN, rule.key)
        if not revoked:
            raise Refused(404, f"no token labelled {label}")
        self.logged(grant, "revoke", label=label)
        return {"revoked": label}

    def _covered(self, grant: Grant, room: str | None) -> None:
        if not grant.covers(room):
            where = f"in {room}" if room is not None else "in every room"
            raise Refused(403, f"{grant.label} may not act {where}")


Handler = Callable[[Request], Awaitable[dict[str, Any]]]


def install(api: FastAPI, node: Node) -> None:
    """The admin API's routes, if ``--admin-token-file`` turns it on (or signed tokens,
    whose ``mod`` claim makes moderators)."""
    token_file = node.settings.admin_token_file
    if not token_file and node.verifier is None:
        return
    admin_api = AdminApi(node, token_file)

    def route(method: str, path: str, handler: Handler) -> None:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                return JSONResponse(await handler(request))
            except Refused as refused:
                return _answer(refused.status, refused.detail)

        api.add_api_route(path, endpoint, methods=[method], include_in_schema=False)

    route("POST", admin.KICK_PATH, admin_api.kick)
    route("POST", admin.BAN_PATH, admin_api.ban)
    route("DELETE", admin.BAN_PATH, admin_api.unban)
    route("GET", admin.BANS_PATH, admin_api.bans)
    route("POST", admin.MUTE_PATH, admin_api.mute)
    route("DELETE", admin.MUTE_PATH, admin_api.unmute)
    route("GET", admin.ROOMS_PATH + "/{room}", admin_api.room)
    route("POST", admin.ROOMS_PATH + "/{room}", admin_api.set_room)
    route("POST", admin.TOKENS_PATH, admin_api.create_token)
    route("GET", admin.TOKENS_PATH, admin_api.tokens)
    route("DELETE", admin.TOKENS_PATH + "/{label}", admin_api.revoke_token)
