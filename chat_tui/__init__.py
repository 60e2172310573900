"""chat_tui: the full-screen Textual chat client.

By layer: ``app`` (the Textual app: config, theme, screens, the terminal, quitting),
``screens`` (the main screen: layout, keys, chrome; help; the room switcher), ``widgets``,
``messages`` (its Textual messages); below them, without Textual, ``controller`` (rooms and the
policies that span them), the model (``rooms``, ``scrollback``, ``notes``, ``search``,
``text_layout``), and the connection (``connection``, ``events``, ``identity``); around them
``commands``, ``config``, ``autostart`` and ``cli``. The wire protocol is ``chat_protocol``'s.
"""
