"""Connecting to Redis, or to the embedded in-process store when there is none.

Every client this package builds decodes replies to `str`
(decode_responses=True); the state classes expect that.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fakeredis
from redis.asyncio import Redis
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError

from state.errors import StateUnavailable

EMBEDDED_NOTICE = (
    "No REDIS_URL: using the embedded in-process store (fakeredis). "
    "Sessions live only as long as this process."
)

CONNECT_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 5.0
# redis-py's default pool raises "Too many connections" once 100 are in use, and a
# worker with 100+ turns in flight would crash. Connections open only on demand, so
# a high cap costs nothing; a blocking pool would, on every command (a condition
# and a timeout per checkout).
MAX_CONNECTIONS = 2048
# What each new connection reports with CLIENT SETINFO. Left to redis-py, every new
# connection builds its own and reads the package's metadata from disk to do it:
# about 1 ms of CPU per connection, half of opening one, paid again whenever a
# burst grows the pool. Built once here, and shared.
DRIVER_INFO = DriverInfo()


def redact(url: str) -> str:
    """`url` with its password replaced by ***, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable Redis URL>"


def embedded() -> Redis:
    """A fresh in-process store (fakeredis with Lua), private to this client."""
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return client


def is_embedded(redis: Redis) -> bool:
    return isinstance(redis, fakeredis.FakeAsyncRedis)


async def connect(
    url: str | None,
    *,
    tls_verify: bool = True,
    socket_timeout: float | None = SOCKET_TIMEOUT_S,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> Redis:
    """A client for `url`, checked with a PING; the embedded store for None.

    `tls_verify=False` (REDIS_TLS_VERIFY=false) turns certificate checks off
    for a `rediss://` URL: managed Redis such as Heroku's serves TLS with a
    self-signed certificate, which no CA vouches for, and its own docs say to
    connect with `ssl_cert_reqs=None` (devcenter.heroku.com/articles/
    connecting-heroku-redis#connecting-in-python). The link stays encrypted,
    but the server is not authenticated: opt in only where that is the case.
    It changes nothing for `redis://`.

    `socket_timeout`: how long any command may wait for Redis's answer before it
    raises (redis.exceptions.TimeoutError). Keep it above the longest blocking
    command's block time (a worker's XREADGROUP). `connect_timeout`: the same
    for opening a connection.

    Raises `StateUnavailable` (naming the URL, without its password) when Redis
    cannot be reached. With None, callers should print `EMBEDDED_NOTICE`.
    """
    if url is None:
        return embedded()
    tls: dict[str, Any] = {}
    if not tls_verify and url.lower().startswith("rediss://"):
        tls = {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    try:
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=30,
            max_connections=MAX_CONNECTIONS,
            driver_info=DRIVER_INFO,
            **tls,
        )
    except ValueError as e:
        raise StateUnavailable(f"REDIS_URL {redact(url)} is not a Redis URL: {e}") from None
    try:
        await client.ping()
    except (RedisError, OSError) as e:
        await client.aclose()
        raise StateUnavailable(f"Redis is not reachable at {redact(url)}: {e}") from e
    return client
