"""A program under a pseudo-terminal, with every byte it writes kept: how the tests read the
escape sequences a terminal receives (notifications, hyperlinks, the title), which a screen
(tmux's or Pilot's) never shows."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from chat_testing.waits import wait_until


class PtyProgram:
    """``command`` on a ``width`` x ``height`` pty; ``output`` is everything it wrote."""

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        *,
        width: int = 120,
        height: int = 40,
        cwd: Path | None = None,
    ) -> None:
        leader, follower = os.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        self._leader = leader
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            command,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # the pty becomes its controlling terminal
        )
        os.close(follower)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._leader, 65536)
            except OSError:  # EIO: the program and every holder of the pty are gone
                return
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    @property
    def output(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def write(self, data: bytes) -> None:
        os.write(self._leader, data)

    def wait_for(self, condition: Callable[[bytes], object], what: str, timeout: float) -> bytes:
        """Wait until ``condition(output)``; fail with ``what`` and the output's end."""
        try:
            wait_until(lambda: condition(self.output), timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"timed out waiting for {what}; the program wrote, at the end: "
                f"{self.output[-2000:]!r}"
            ) from None
        return self.output

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + 5
        self._reader.join(max(deadline - time.monotonic(), 0))
        os.close(self._leader)
