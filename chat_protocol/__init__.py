"""The chat wire protocol, shared by the server (``chat_server``), the client (``chat_tui``)
and the benchmarks: defined here once, documented exactly in ``docs/protocol.md``.

* ``names``: room names and member names;
* ``text``: sanitising, the characters it removes, the text protocol's line encoding;
* ``limits``: the reference server's default limits;
* ``frames``: what a client reads from a server, whatever the dialect;
* ``codec``, ``v1``, ``v2``: the two dialects (the original text protocol and the ``chat.v2``
  JSON subprotocol), each a codec that builds and parses its frames;
* ``query``: the query parameters of ``/chat/{room}``;
* ``close``: every close the server sends, as values: code, reason, metric label and what a
  client does about it;
* ``http``: the HTTP paths and the JSON shapes of their answers;
* ``hosts`` and ``rates``: loopback addresses, and the token bucket every rate limit is.
"""
