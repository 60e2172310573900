"""The Redis backend (``redis://``, ``rediss://``, ``unix://``): see ``backend.py``."""

from chat_server.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
