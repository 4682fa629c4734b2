"""The blob store `[store]` names: the local data directory (default) or an S3 bucket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from proxy.config import ConfigError, StoreKind, StoreSettings
from proxy.store.blob_protocol import BlobStore
from proxy.store.blobs import LocalBlobStore
from proxy.store.s3 import S3BlobStore, s3_client


@asynccontextmanager
async def open_blob_store(data_dir: Path, settings: StoreSettings) -> AsyncIterator[BlobStore]:
    """The configured store, its connections closed on exit (not started: call `start`).
    Raises ConfigError for an S3 store without a bucket."""
    if settings.kind is StoreKind.LOCAL:
        yield LocalBlobStore(data_dir)
        return
    async with s3_client(settings) as client:
        yield S3BlobStore(data_dir, settings, client)


def require_local_store(settings: StoreSettings, command: str) -> None:
    """For the commands that work on the data directory's blob files themselves (doctor, the
    air-gap export and import): ConfigError unless `[store] kind = "local"`, so that they never
    judge an S3 store by an empty local directory (doctor --repair would forget every blob)."""
    if settings.kind is StoreKind.LOCAL:
        return
    raise ConfigError(
        f"`hubwarden {command}` works on a local blob store only, and [store] kind is "
        f'"{settings.kind.value}"; run it against a data directory with kind = "local"',
        source="[store]",
        key="store.kind",
        value=settings.kind.value,
        allowed="local",
    )
