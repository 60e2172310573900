"""pytest marks for tests that need a tool of the machine: skipped, saying why, where it is
missing (``.ci/run`` installs it, and fails if it cannot)."""

from __future__ import annotations

import pytest

from chat_testing.redis_servers import REDIS_SERVER

requires_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (Debian: apt-get install redis-server; "
    ".ci/run installs it)",
)
