"""The server's HTTP side: the ASGI application (``app``), the ``/chat/{room}`` handshake
(``endpoint``), and ``/metrics`` (``metrics``)."""
