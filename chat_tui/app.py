"""The chat client's Textual app: its configuration, theme, screens, the terminal, and quitting.

The rooms and what happens to them are the controller's (``controller.py``, no Textual); the
main screen (``screens/chat.py``) shows them. The app is the controller's host: it runs the
controller's background jobs as Textual workers, hands it the wake-ups of its connections as
messages to the main screen (so that what they report is applied between keys, in the app's own
loop), and notifies (``notify.py``: the terminal's own notification, the desktop's, or the bell).
It also keeps the terminal's title.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
from rich.segment import Segments
from textual import events, on
from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.strip import Strip
from textual.worker import Worker

from chat_tui import notify
from chat_tui.config import Config
from chat_tui.connection import ConnectionFactory
from chat_tui.controller import ChatController
from chat_tui.identity import Identity, TokenStore
from chat_tui.logbook import Logbook, default_logs_dir
from chat_tui.messages import EventsWaiting, QuitAsked, UnreadChanged
from chat_tui.notify import Method, Notice
from chat_tui.screens.chat import ChatScreen
from chat_tui.scrollback import EntryKind
from chat_tui.widgets.chat_input import parse_pasted_escapes

APP_NAME = "chat"


def route_alt_digits() -> None:
    """Make ESC+digit arrive as alt+digit, so that alt+1 … alt+9 reach their bindings.

    xterm-like terminals and tmux send alt+2 as ESC "2". Textual maps ESC+digit to the
    characters macOS types for Option+digit ("™" for ESC "2", for WezTerm's sake), so without
    this the keys would never be seen as alt+N. Dropping those entries from its table (Textual
    has no public way to change it) lets the parser's generic ESC-prefix rule produce "alt+2".
    Idempotent; affects only this process.
    """
    for digit in "0123456789":
        ANSI_SEQUENCES_KEYS.pop("\x1b" + digit, None)


# Styles whose terminal codes Textual keeps (Strip.render_ansi's cache holds 16,384).
ANSI_KEPT = 1024


def bound_ansi_cache(kept: int = ANSI_KEPT) -> None:
    """Make Textual keep the terminal codes of at most ``kept`` styles, not 16,384.

    Every row the log shows carries the mouse offsets of its cells (selection needs them:
    ``Strip.apply_offsets``), so each row of a flood has styles of its own, never seen again;
    Textual's cache of their codes (``Strip.render_ansi``) keeps each with its style, its meta
    and its link id, some 500 bytes, until 16,384 are held: about 3 MiB after 5 x 10,000
    messages, 8 MiB once full. A screen's styles fit in ``kept``; one not in it is worked out
    again in microseconds. The same function, cached less; left alone if Textual's is not a
    cached function. Idempotent; affects only this process.
    """
    cached = Strip.__dict__.get("render_ansi")
    function = getattr(cached, "__func__", None)
    inner = getattr(function, "__wrapped__", None)
    if inner is None or not hasattr(function, "cache_info"):
        return
    if function.cache_info().maxsize != kept:
        Strip.render_ansi = classmethod(functools.lru_cache(maxsize=kept)(inner))  # type: ignore[method-assign,assignment]


async def _desktop(notice: Notice) -> None:
    """The desktop notifier, waited for (so that it is reaped) but never for long."""
    try:
        process = await asyncio.create_subprocess_exec(
            *notify.desktop_command(notice),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return  # uninstalled meanwhile: nothing to show
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


def title_text(unread: int) -> str:
    return f"({unread}) {APP_NAME}" if unread else APP_NAME


class ChatApp(App[None]):
    """The full-screen chat client."""

    CSS_PATH = "app.tcss"
    TITLE = APP_NAME
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        # Reached only when nothing is selected: the input and the screen copy a selection.
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
        connection_factory: ConnectionFactory | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        token_store: TokenStore | None = None,
        logs_root: Path | None = None,
    ) -> None:
        super().__init__()
        route_alt_digits()
        bound_ansi_cache()
        parse_pasted_escapes()  # a pasted ESC must not turn the rest of the paste into keys
        self.config = config
        # One name in every room and across reconnects (and restarts, with keep_name).
        store = token_store
        # Another chat-tui of this user runs already: the kept name is its (see acquire).
        self.name_in_use = store is not None and config.keep_name and not store.acquire()
        if store is not None and not config.keep_name:
            store.forget(config.server)
        if not config.keep_name or self.name_in_use:
            store = None
        # Logs on disk; a failure is said once, from the logbook's thread, in the app's loop.
        self.logbook = (
            Logbook(
                logs_root or default_logs_dir(),
                config.server,
                on_error=self._log_failed,
                on_notice=self._log_status,
            )
            if config.log
            else None
        )
        self.controller = ChatController(
            config,
            self,
            logbook=self.logbook,
            identity=Identity.kept(config.server, store, config.nick or None),
            connection_factory=connection_factory,
            clock=clock or datetime.now,
            monotonic=monotonic,
            http_transport=http_transport,
        )
        self.notify_method = notify.choose(config.notifications)
        self._running_loop: asyncio.AbstractEventLoop | None = None
        self.terminal_title = title_text(0)
        self._title_written: str | None = None
        self.main_screen = ChatScreen(self.controller)

    def get_default_screen(self) -> Screen[Any]:
        return self.main_screen

    def on_mount(self) -> None:
        # Everything alive now (modules, Textual, the widgets) lives as long as the app: out of
        # the garbage collector's sight, so that its full collections, which come more often as
        # scrollback grows, scan only what came after (they took 60+ ms with all of it).
        gc.freeze()
        self._running_loop = asyncio.get_running_loop()
        if self.config.theme in self.available_themes:
            self.theme = self.config.theme
        controller = self.controller
        controller.start(self.config.rooms)
        if self.config.theme not in self.available_themes:
            controller.say(
                EntryKind.ERROR, f"unknown theme {self.config.theme!r}; using the default"
            )
        if self.name_in_use and controller.current is not None:
            controller.current.with_join(
                EntryKind.STATUS,
                "another chat-tui of yours is running and keeps your name; this one gets a "
                "name of its own",
            )

    def _log_failed(self, message: str) -> None:
        self._from_logbook(EntryKind.ERROR, message)

    def _log_status(self, message: str) -> None:
        self._from_logbook(EntryKind.STATUS, message)

    def _from_logbook(self, kind: EntryKind, message: str) -> None:
        """From the logbook's thread: said in the app's loop, without waiting for it (the app
        may be closing the logbook meanwhile)."""
        loop = self._running_loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self.controller.say, kind, message)

    def on_unmount(self) -> None:
        if self.logbook is not None:
            self.logbook.close()
        # Back under the collector, so that an app that is gone can be collected (tests run
        # many apps in one process).
        gc.unfreeze()
        if self._title_written is not None:
            self._write_terminal("\x1b[23;0t")  # the title the terminal had before

    def _fatal_error(self) -> None:
        """A crash: the traceback, without the local variables Textual would print with it
        (room state, names, message text). Textual has no public way to choose this."""
        from rich.traceback import Traceback

        self.bell()
        traceback = Traceback(show_locals=False, width=None)
        self._exit_renderables.append(
            Segments(self.console.render(traceback, self.console.options))
        )
        self._close_messages_no_wait()

    # --- the controller's host ----------------------------------------------------------------

    def spawn(
        self, work: Coroutine[Any, Any, None], *, group: str, exclusive: bool = False
    ) -> Worker[None]:
        return self.run_worker(work, group=group, exclusive=exclusive, exit_on_error=False)

    def wake(self, room: str) -> None:
        self.main_screen.post_message(EventsWaiting(room))

    def alert(self, notice: Notice) -> None:
        method = self.notify_method
        if method is Method.BELL:
            self.bell()
        elif method is Method.DESKTOP:
            self.run_worker(_desktop(notice), group="notify", exit_on_error=False)
        elif method is not Method.OFF:
            self._write_terminal(notify.sequence(method, notice, tmux=notify.in_tmux()))

    # --- the terminal -----------------------------------------------------------------------

    def on_app_blur(self, event: events.AppBlur) -> None:
        self.controller.focus(False)

    def on_app_focus(self, event: events.AppFocus) -> None:
        self.controller.focus(True)

    def _write_terminal(self, sequence: str) -> None:
        if not self.is_headless and self._driver is not None:
            self._driver.write(sequence)

    @on(UnreadChanged)
    def _unread_changed(self, event: UnreadChanged) -> None:
        """The unread count, in the terminal's title."""
        self.terminal_title = title_text(event.count)
        if self.config.title and self._title_written != self.terminal_title:
            if self._title_written is None:
                self._write_terminal("\x1b[22;0t")  # keep the terminal's own title to restore
            self._title_written = self.terminal_title
            # Only digits and our own words: nothing from the network reaches the terminal.
            self._write_terminal(f"\x1b]2;{self.terminal_title}\x07")

    # --- quitting ---------------------------------------------------------------------------

    @on(QuitAsked)
    def _quit_asked(self, event: QuitAsked) -> None:
        self.action_quit()

    def action_quit(self) -> None:  # type: ignore[override]
        """Close every connection (code 1000), then exit; with messages not yet sent, the
        controller may ask to be asked again. In a worker: the acks are handled by the app's
        message loop meanwhile."""
        self.run_worker(self._quit(), group="quit", exit_on_error=False)

    async def _quit(self) -> None:
        if await self.controller.quit():
            self.exit()
