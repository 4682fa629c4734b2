"""The services one running Hubwarden is made of, built by `proxy.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.admin.access_list import AccessList
from proxy.admin.identity import Identities
from proxy.admin.review import Review
from proxy.admin.risk import RiskCards
from proxy.catalog import Catalog
from proxy.config import Settings
from proxy.delivery import Delivery
from proxy.ingest import Ingestor
from proxy.store.blob_protocol import BlobStore
from proxy.store.repository import Repository
from proxy.store.watches import WatchRecords
from proxy.trust.signatures import Signatures
from proxy.upstream import Upstream


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    repository: Repository
    store: BlobStore
    catalog: Catalog
    ingestor: Ingestor
    delivery: Delivery
    upstream: Upstream | None
    review: Review
    identities: Identities
    access_list: AccessList
    risk_cards: RiskCards | None = None
    watches: WatchRecords | None = None  # what the upstream watch saw
    signatures: Signatures | None = None  # model signatures (the pages show what is recorded)
