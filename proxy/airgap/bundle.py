"""Signed bundles end to end: what `hubwarden export` and `hubwarden import` call.

Export: `export_bundle` plans the OCI layout (oci.plan), signs every manifest, state and BOM
blob with the instance's key (signing.sign), and writes the layout (oci.write).

Import: `VerifiedBundle` reads everything but the files, checks the signature against the
trusted keys and that it covers exactly the bundle's manifests, state and BOMs, then streams the
files (each checked against its sha256 and size) and, at the end, that every file the bundle does
not carry is one it declared omitted (an incremental bundle's `since`), so a truncated or trimmed
bundle is refused.

The signed statement's predicate (`PREDICATE_TYPE`):
    {"format": 1, "created": RFC 3339 time, "exporter": {"fingerprint": hex, "instance": str},
     "omitted": [hex digests of files referenced but not carried]}
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from proxy.airgap import oci, signing
from proxy.airgap.errors import BundleError
from proxy.airgap.keys import SigningKey, TrustedKey
from proxy.errors import shown

PREDICATE_TYPE = "https://hubwarden.dev/bundle/v1"
PREDICATE_FORMAT = 1
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ExportResult:
    paths: list[Path]
    """The bundle (a tar, its split parts, or a directory)."""
    revisions: int
    files_written: int
    file_bytes: int
    omitted: int
    fingerprint: str


def export_bundle(
    out: Path,
    revisions: Sequence[oci.RevisionContent],
    key: SigningKey,
    *,
    created: datetime,
    instance: str = "",
    since: Iterable[str] = (),
    directory: bool = False,
    split: int | None = None,
    progress: oci.Progress | None = None,
    limits: oci.Limits = oci.DEFAULT_LIMITS,
) -> ExportResult:
    """Write a signed bundle of `revisions` at `out`. `since`: hex digests of files a previous
    bundle carried (see `previous_files`). Raises BundleError."""
    planned = oci.plan(revisions, since=since, limits=limits)
    predicate = {
        "format": PREDICATE_FORMAT,
        "created": created.isoformat(),
        "exporter": {"fingerprint": key.info.fingerprint, "instance": instance},
        "omitted": sorted(planned.omitted),
    }
    signature = signing.sign(planned.subjects, PREDICATE_TYPE, predicate, key)
    paths = oci.write(planned, signature, out, directory=directory, split=split, progress=progress)
    return ExportResult(
        paths,
        len(revisions),
        len(planned.files),
        planned.file_bytes,
        len(planned.omitted),
        key.info.fingerprint,
    )


def previous_files(path: Path, limits: oci.Limits = oci.DEFAULT_LIMITS) -> frozenset[str]:
    """Every file digest a previous bundle references (carried or itself omitted): the `since`
    of the next incremental export. Reads only the bundle's metadata."""
    return frozenset(oci.read_contents(path, limits).files)


class VerifiedBundle:
    """A bundle whose signature and metadata were checked; its files stream from `blobs()` or
    `extract()`. Raises BundleError (SignatureError for the signature) from the constructor
    and while streaming."""

    def __init__(
        self,
        path: Path,
        trusted_keys: Sequence[TrustedKey],
        limits: oci.Limits = oci.DEFAULT_LIMITS,
    ) -> None:
        self._reader = oci.BundleReader(path, limits)
        try:
            contents = self._reader.contents
            verified = signing.verify(
                contents.signature,
                trusted_keys,
                contents.subjects,
                predicate_type=PREDICATE_TYPE,
            )
            self.key_name = verified.key_name
            self.fingerprint = next(
                (k.fingerprint for k in trusted_keys if k.name == verified.key_name), ""
            )
            self.predicate: Mapping[str, Any] = verified.statement.predicate
            self.omitted = _omitted(self.predicate, contents.files)
        except BaseException:
            self._reader.close()
            raise
        self.revisions = contents.revisions
        self.files = contents.files
        self.digest = hashlib.sha256(contents.signature).hexdigest()
        """The sha256 of the signature, which covers every manifest and state: the bundle's
        name in this mirror's records of imports."""
        created = self.predicate.get("created")
        self.created = created if isinstance(created, str) else ""
        exporter = self.predicate.get("exporter")
        instance = exporter.get("instance") if isinstance(exporter, dict) else None
        self.exporter = shown(instance) if isinstance(instance, str) else ""

    def __enter__(self) -> VerifiedBundle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    @property
    def carried_bytes(self) -> int:
        """The bytes of files the bundle carries (for a progress bar and a free-space check)."""
        return sum(size for digest, size in self.files.items() if digest not in self.omitted)

    def blobs(self) -> Iterator[oci.IncomingBlob]:
        """Each carried file, streamed and checked; after the last, BundleError if a file that
        was not declared omitted is missing."""
        yield from self._reader.blobs()
        absent = self._reader.absent or frozenset()
        missing = sorted(absent - self.omitted)
        if missing:
            raise BundleError(
                f"{len(missing)} file blobs are missing from the bundle (first: "
                f"sha256:{missing[0]}) that it does not declare omitted: it is truncated or "
                "was altered"
            )

    def extract(self, destination: Path, progress: oci.Progress | None = None) -> list[str]:
        """Write each carried file as `destination/<sha256 hex>` (a temp file, fsynced, renamed
        once its bytes are checked: no unverified file ever has its final name). Returns the
        digests written. On BundleError the files already written stay (all verified)."""
        written: list[str] = []
        for blob in self.blobs():
            final = destination / blob.digest  # the digest matched [0-9a-f]{64}
            temp = destination / f".{blob.digest}.partial"
            try:
                with temp.open("wb") as out:
                    for chunk in blob.chunks():
                        out.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                temp.replace(final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                raise
            written.append(blob.digest)
        return written


def _omitted(predicate: Mapping[str, Any], files: Mapping[str, int]) -> frozenset[str]:
    if predicate.get("format") != PREDICATE_FORMAT:
        raise BundleError(
            f"the bundle's signed statement is format {shown(predicate.get('format'))}; this "
            f"Hubwarden reads format {PREDICATE_FORMAT}: upgrade it"
        )
    omitted = predicate.get("omitted", [])
    if not isinstance(omitted, list) or not all(
        isinstance(d, str) and _SHA256_HEX.fullmatch(d) for d in omitted
    ):
        raise BundleError("the bundle's signed statement lists omitted files malformed")
    unknown = [d for d in omitted if d not in files]
    if unknown:
        raise BundleError(
            f"the bundle declares sha256:{unknown[0]} omitted, which none of its manifests "
            "references"
        )
    return frozenset(omitted)
