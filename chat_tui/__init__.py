"""chat_tui: the full-screen Textual chat client.

By layer: ``app`` (the Textual app: config, theme, screens, the terminal, quitting),
``screens`` (the main screen: layout, keys, chrome; help; the room switcher), ``widgets``,
``messages`` (its Textual messages); below them, without Textual, ``controller`` (rooms and the
policies that span them), the model (``rooms``, ``scrollback``, ``notes``, ``search``,
``text_layout``), and the connection (``connection``, ``events``, ``identity``); around them
``commands``, ``config``, ``autostart`` and ``cli``. The wire protocol is ``chat_protocol``'s.
"""

import sys

if "httpx" not in sys.modules:
    # httpx imports its own command-line tool whenever click is installed (click, pygments,
    # rich.syntax: some 3 MiB of every chat-tui's memory); chat-tui never runs it. Marked
    # missing, httpx defines a stub in its place (its ``except ImportError``).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
