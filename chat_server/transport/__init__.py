"""The server's transport: uvicorn's HTTP and WebSocket protocols with the limits they lack
(``http_guard``, ``uvicorn_ws``), and the uvicorn configuration that carries those limits
(``config``)."""
