"""A real S3 API server on loopback for the tests: moto's server (`python -m moto.server`) in
its own process, one per test session, on a free port; a fresh bucket per test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from proxy.config import Secret, StoreKind, StoreSettings
from proxy.store.s3 import s3_client

START_TIMEOUT_S = 30.0
TEST_REGION = "us-east-1"
# moto accepts any credentials; fixed ones keep the tests independent of the environment's.
TEST_KEY_ID = "hubwarden-test"
TEST_SECRET = "hubwarden-test-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_moto() -> tuple[subprocess.Popen[bytes], int]:
    """moto's server on a free port, once it accepts connections (a port taken between the
    probe and the start is retried on another)."""
    for _ in range(3):
        port = _free_port()
        process = subprocess.Popen(  # noqa: S603 (a fixed argv: this Python running moto)
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port):
                return process, port
            time.sleep(0.1)
        process.kill()
        process.wait()
    raise RuntimeError("moto's S3 server did not start (python -m moto.server)")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a running moto S3 server, stopped at the end of the session."""
    process, port = _start_moto()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s3_store_settings(endpoint: str, bucket: str, **overrides: object) -> StoreSettings:
    values: dict[str, object] = {
        "kind": StoreKind.S3,
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": TEST_REGION,
        "access_key_id": Secret(TEST_KEY_ID),
        "secret_access_key": Secret(TEST_SECRET),
    }
    values.update(overrides)
    return StoreSettings(**values)  # type: ignore[arg-type]


async def new_bucket(endpoint: str, **overrides: object) -> StoreSettings:
    """`[store]` settings naming a new, empty bucket of the S3 server at `endpoint`."""
    settings = s3_store_settings(endpoint, f"hubwarden-{uuid.uuid4().hex[:20]}", **overrides)
    async with s3_client(settings) as client:
        await client.create_bucket(Bucket=settings.bucket)
    return settings


@pytest.fixture
async def s3_bucket(s3_endpoint: str) -> StoreSettings:
    """`[store]` settings naming a new, empty bucket of the moto server."""
    return await new_bucket(s3_endpoint)
