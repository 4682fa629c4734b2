from __future__ import annotations

from pathlib import Path

import pytest

from proxy.airgap.keys import KeyStore, SigningKey, TrustedKey


@pytest.fixture
def exporter(tmp_path: Path) -> KeyStore:
    """The DMZ instance's key store, with its signing key made."""
    store = KeyStore(tmp_path / "dmz")
    store.create()
    return store


@pytest.fixture
def key(exporter: KeyStore) -> SigningKey:
    return exporter.signing_key()


@pytest.fixture
def importer(tmp_path: Path, key: SigningKey) -> KeyStore:
    """The offline instance's key store, trusting the DMZ key as "dmz"."""
    store = KeyStore(tmp_path / "offline")
    store.trust(key.info.pem.encode(), "dmz")
    return store


@pytest.fixture
def trusted(importer: KeyStore) -> list[TrustedKey]:
    return importer.trusted()
