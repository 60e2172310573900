"""Units of the input guards: budgets measured at arrival, the loop monitor, JSON log fields,
and the settings and options that configure them."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat_server.budget import Budget
from chat_server.loop_lag import LoopMonitor, monitor
from chat_server.ops import cli
from chat_server.ops.logs import structured
from chat_server.ops.settings import Settings
from chat_testing.waits import eventually


def test_budget_allows_the_burst_then_the_rate() -> None:
    b = Budget(rate=10, burst=20, now=0.0)
    assert all(b.spend(1, 0.0) for _ in range(20))
    assert not b.spend(1, 0.0)
    assert b.spend(1, 0.1) and not b.spend(1, 0.1)  # 0.1 s earns one
    assert all(b.spend(1, 100.0) for _ in range(20)) and not b.spend(1, 100.0)  # capped


async def ticked(lags: list[float], after: int = 0) -> None:
    """Until the loop monitor has measured a tick more than ``after``."""
    await eventually(lambda: len(lags) > after, timeout=5, interval=0.01, what="a tick")


async def test_budget_does_not_hold_a_server_stall_against_a_member() -> None:
    ticks: list[float] = []
    on_lag, monitor.on_lag = monitor.on_lag, ticks.append
    monitor.start()
    try:
        await ticked(ticks)  # the monitor is measuring
        loop = asyncio.get_running_loop()
        b = Budget(rate=10, burst=20, now=loop.time())
        time.sleep(2)  # the whole loop stands still: 20 messages pile up meanwhile
        now = loop.time()
        assert all(b.spend(1, now) for _ in range(30))
        # Without a stall, the cap is the burst again.
        await ticked(ticks, len(ticks))  # the monitor has measured the stall's end
        fresh = Budget(rate=10, burst=20, now=loop.time())
        await asyncio.sleep(0.3)  # time under test: it would earn 3 more than the burst
        now = loop.time()
        assert sum(fresh.spend(1, now) for _ in range(30)) == 20
    finally:
        monitor.stop()
        monitor.on_lag = on_lag


async def test_loop_monitor_measures_stalls() -> None:
    m = LoopMonitor()
    lags: list[float] = []
    m.on_lag = lags.append
    m.start()
    try:
        await ticked(lags)  # the monitor is measuring
        time.sleep(0.5)  # the stall under test
        await ticked(lags, len(lags))  # the monitor has measured it
        assert max(lags) >= 0.45
        assert 0.4 <= m.stalled_seconds(asyncio.get_running_loop().time()) < 1.5
    finally:
        m.stop()


@pytest.mark.parametrize(
    ("fmt", "args", "fields"),
    [
        (
            "joined room=%s name=%s",
            ("r", "user_a"),
            {"event": "joined", "room": "r", "name": "user_a"},
        ),
        (
            "left room=%s name=%s code=%s",
            ("r", "n", 1000),
            {"event": "left", "room": "r", "name": "n", "code": 1000},
        ),
        (
            "evicted room=%s name=%s reason=slow consumer",
            ("r", "n"),
            {"event": "evicted", "room": "r", "name": "n", "reason": "slow consumer"},
        ),
        ("refused origin=%s", ("http://x y",), {"event": "refused", "origin": "http://x y"}),
        ("open files limit raised from %s to %s", (1, 2), None),
        ("Started server process [%d]", (1,), None),
    ],
)
def test_json_fields_come_from_the_event_key_value_shape(
    fmt: str, args: tuple, fields: dict | None
) -> None:
    assert structured(fmt, args) == fields


def test_new_settings_from_environment_and_validation() -> None:
    s = Settings.from_env({"CHAT_SERVER_METRICS": "off", "CHAT_SERVER_MAX_FRAME_RATE": "50"})
    assert s.metrics is False and s.max_frame_rate == 50
    assert Settings.from_env({"CHAT_SERVER_METRICS": "auto"}).metrics is None
    with pytest.raises(ValueError, match="log-format"):
        Settings.from_env({}, log_format="xml")
    with pytest.raises(ValueError, match="max-pending must be positive"):
        Settings.from_env({}, max_pending=0)
    with pytest.raises(ValueError, match="max-frame-rate must be 0"):
        Settings.from_env({}, max_frame_rate=-1)


def test_options_reach_the_background_server() -> None:
    args = cli.build_parser().parse_args(
        ["start", "--no-metrics", "--log-format", "json", "--handshake-timeout", "3"]
    )
    child = cli.argv_for_child(args)
    assert "--no-metrics" in child and "--metrics" not in child
    assert child[child.index("--log-format") + 1] == "json"
    settings = cli.settings_from_args(args)
    assert (settings.metrics, settings.log_format, settings.handshake_timeout) == (
        False,
        "json",
        3.0,
    )
