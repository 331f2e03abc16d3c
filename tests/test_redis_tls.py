"""REDIS_TLS_VERIFY: managed Redis behind TLS with a self-signed certificate (Heroku's).

A TLS proxy on loopback, holding a certificate made here that no CA signed,
forwards to the real Redis: what Heroku Key-Value Store looks like to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from state import StateUnavailable, connect
from tests.redis_fixtures import REDIS_TEST_URL

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate made here, which no CA signed."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@contextlib.asynccontextmanager
async def tls_redis(context: ssl.SSLContext) -> AsyncIterator[str]:
    """A rediss:// URL served with `context`'s certificate, proxied to the test Redis."""
    target = urlsplit(REDIS_TEST_URL)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"rediss://127.0.0.1:{port}{target.path}"
    finally:
        server.close()


async def test_a_self_signed_certificate_is_refused_unless_the_operator_opts_out(
    self_signed: ssl.SSLContext,
) -> None:
    async with tls_redis(self_signed) as url:
        with pytest.raises(StateUnavailable, match="not reachable"):
            await connect(url)  # checked by default: no CA signed this certificate
        redis = await connect(url, tls_verify=False)
        try:
            assert await redis.ping()
            await redis.set("tls-probe", "1", ex=5)
            assert await redis.get("tls-probe") == "1"
        finally:
            await redis.aclose()


async def test_the_opt_out_changes_nothing_for_a_plain_redis_url() -> None:
    redis = await connect(REDIS_TEST_URL, tls_verify=False)
    try:
        assert await redis.ping()
    finally:
        await redis.aclose()
