"""Connecting to Redis, or to the embedded in-process store when there is none.

Every client this package builds decodes replies to `str`
(decode_responses=True); the state classes expect that.
"""

from __future__ import annotations

import re
from typing import Any, cast

import fakeredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from state.errors import StateUnavailable, describe

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
# A pooled connection that Redis closed (a restart, a failover, an idle timeout) fails
# its next command with ConnectionError; without a retry each stale connection cost one
# failed command, and a worker left that job to wait out RECLAIM_IDLE_MS (60 s). Retried
# at once on a fresh connection, a restart costs what the reconnect costs. Only
# connection errors: a timeout is a stalled Redis, which must stay a quick error (the web
# process answers Slack within a second). redis-py docs, "Retries":
# redis.readthedocs.io/en/stable/retry.html (Retry, retry_on_error).
RETRY_ATTEMPTS = 3
RETRY_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
# A connection idle this long is PINGed before use (and reopened if that fails).
HEALTH_CHECK_INTERVAL_S = 10

# Query parameters redis-py reads credentials from (`?password=...`).
_SECRET_QUERY = re.compile(r"((?:^|[?&])(?:password|username)=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """`url` with its password replaced by ***, safe for logs and error messages.

    Works on the text, not on a parse: a password with '#', '/', '?' or '@' in it
    (base64 access keys) makes `urlsplit` cut the URL in the wrong place, and a URL
    that does not parse at all must not be printed raw either. The userinfo is
    everything between '://' and the last '@'; only the user name before its ':'
    is kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at != -1:
        user, colon, _ = rest[:at].partition(":")
        rest = (f"{user}:***" if colon else "***") + rest[at:]
    if "?" in rest:
        head, _, query = rest.partition("?")
        rest = head + "?" + _SECRET_QUERY.sub(r"\1***", query)
    return f"{scheme}{sep}{rest}"


def embedded() -> Redis:
    """A fresh in-process store (fakeredis with Lua), private to this client."""
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return client


def is_embedded(redis: Redis) -> bool:
    return isinstance(redis, fakeredis.FakeAsyncRedis)


def is_cluster(redis: Redis) -> bool:
    """Whether `connect` found a Redis Cluster and made a cluster client."""
    return isinstance(redis, RedisCluster)


async def _cluster_enabled(client: Redis) -> bool:
    """What the server says of itself (`INFO cluster`); a server that will not say is not one."""
    try:
        info = await client.info("cluster")
    except (RedisError, OSError):
        return False
    return str(info.get("cluster_enabled", 0)) == "1"


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

    A `url` naming any node of a Redis Cluster gets redis-py's async cluster
    client (`RedisCluster`, which follows the slots to every node) with the
    same options: the server is asked (`INFO cluster`), no setting says so.
    It is returned under the `Redis` type, whose commands it shares.

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
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
            max_connections=MAX_CONNECTIONS,
            driver_info=DRIVER_INFO,
            retry=Retry(RETRY_BACKOFF, RETRY_ATTEMPTS, (RedisConnectionError,)),
            retry_on_error=[RedisConnectionError],
            **tls,
        )
    except (ValueError, TypeError):
        # redis-py's message quotes the URL, password and all: never shown.
        raise StateUnavailable(
            f"REDIS_URL {redact(url)} is not a Redis URL: it must look like "
            "redis://[:password@]host[:port][/db] or rediss://… (a password with '/', '?', "
            "'#' or '@' in it must be percent-encoded)"
        ) from None
    try:
        await client.ping()
        cluster = await _cluster_enabled(client)
    except (RedisError, OSError) as e:
        await client.aclose()
        raise StateUnavailable(f"Redis is not reachable at {redact(url)}: {describe(e)}") from None
    if not cluster:
        return client
    await client.aclose()
    nodes = RedisCluster.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        max_connections=MAX_CONNECTIONS,
        driver_info=DRIVER_INFO,
        retry=Retry(RETRY_BACKOFF, RETRY_ATTEMPTS, (RedisConnectionError,)),
        **tls,
    )
    try:
        await nodes.initialize()
        await nodes.ping()
    except (RedisError, OSError) as e:
        await nodes.aclose()
        raise StateUnavailable(
            f"Redis Cluster is not reachable at {redact(url)}: {describe(e)}"
        ) from None
    return cast(Redis, nodes)
