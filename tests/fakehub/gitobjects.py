"""Git and LFS object hashing for the fake Hub: blobs, LFS pointers, trees and commits.

The real Hub is a git server: a regular file's ETag is its git blob sha1, an LFS file's is the
sha256 of its content, and the git blob stored for an LFS file is its pointer text. Trees and
commits are hashed exactly as git does, so every oid the fake hands out is a real git oid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

LFS_POINTER_TEMPLATE = (
    "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
)
DEFAULT_LFS_SUFFIXES = (
    ".safetensors", ".bin", ".gguf", ".parquet", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".onnx",
    ".h5", ".msgpack", ".pkl", ".pickle", ".joblib", ".arrow", ".zip", ".tar", ".gz", ".model",
)  # fmt: skip
_READ_CHUNK_BYTES = 1 << 20
GITATTRIBUTES_DEFAULT = "".join(
    f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in DEFAULT_LFS_SUFFIXES
).encode()

Content = bytes | Path
"""File content: bytes in memory, or a file on disk (for large files; read lazily when served)."""


def git_blob_sha1(data: bytes) -> str:
    """The git oid of a blob holding ``data``."""
    header = b"blob %d\0" % len(data)
    return hashlib.sha1(header + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer text git stores in place of an LFS file."""
    return LFS_POINTER_TEMPLATE.format(sha256=sha256, size=size).encode()


def fake_xet_hash(sha256: str) -> str:
    """A stable 64-hex stand-in for the Xet hash of a file (never equal to its sha256)."""
    return hashlib.sha256(b"xet:" + sha256.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LfsRule:
    """Which files become LFS files when a commit does not list them explicitly."""

    threshold_bytes: int = 1024
    suffixes: tuple[str, ...] = DEFAULT_LFS_SUFFIXES

    def is_lfs(self, path: str, size: int) -> bool:
        return size > self.threshold_bytes or path.lower().endswith(self.suffixes)


@dataclass(frozen=True, slots=True)
class FileBlob:
    """One file's content and every hash the Hub advertises for it."""

    content: Content = field(repr=False)
    size: int
    sha1: str
    """git blob sha1 of the content (the ETag of a regular file)."""
    sha256: str
    is_lfs: bool

    @property
    def oid(self) -> str:
        """The git oid in the tree: the blob sha1, or the pointer's sha1 for an LFS file."""
        return git_blob_sha1(self.pointer) if self.is_lfs else self.sha1

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def etag(self) -> str:
        """What the Hub puts in ``X-Linked-Etag``: sha256 for LFS files, git sha1 otherwise."""
        return self.sha256 if self.is_lfs else self.sha1

    @property
    def xet_hash(self) -> str:
        return fake_xet_hash(self.sha256)

    def read(self) -> bytes:
        """The whole content (tests only; large on-disk files should be read by range)."""
        return self.read_range(0, self.size)

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the content; blocking for on-disk content."""
        if isinstance(self.content, bytes):
            return self.content[start:end]
        with self.content.open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


def make_blob(path: str, content: Content, *, lfs: bool | None, rule: LfsRule) -> FileBlob:
    """Hash ``content`` once (streaming for on-disk files) and decide LFS with ``rule``."""
    sha256 = hashlib.sha256()
    size = _content_size(content)
    sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    for chunk in _iter_content(content):
        sha256.update(chunk)
        sha1.update(chunk)
    is_lfs = rule.is_lfs(path, size) if lfs is None else lfs
    return FileBlob(content, size, sha1.hexdigest(), sha256.hexdigest(), is_lfs)


def _content_size(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def _iter_content(content: Content) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content
        return
    with content.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK_BYTES):
            yield chunk


def tree_oids(files: Mapping[str, FileBlob]) -> dict[str, str]:
    """Git tree oid of every directory of ``files``, keyed by path ("" is the root)."""
    children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            children.setdefault(directory, {})
    for path, blob in files.items():
        parent, _, name = path.rpartition("/")
        children[parent][name] = (False, blob.oid)
    oids: dict[str, str] = {}
    # Deepest directories first, so a parent always finds its children's oids.
    for directory in sorted(children, key=lambda d: d.count("/") + bool(d), reverse=True):
        for sub in _direct_subdirectories(directory, children):
            children[directory][sub.rpartition("/")[2]] = (True, oids[sub])
        oids[directory] = _hash_tree(children[directory])
    return oids


def _direct_subdirectories(directory: str, children: Collection[str]) -> list[str]:
    prefix = f"{directory}/" if directory else ""
    return [d for d in children if d and d.startswith(prefix) and "/" not in d[len(prefix) :]]


def _hash_tree(entries: Mapping[str, tuple[bool, str]]) -> str:
    # git sorts tree entries as if directory names ended with "/".
    def sort_key(name: str) -> bytes:
        return (name + "/" if entries[name][0] else name).encode()

    def encode(name: str) -> bytes:
        is_tree, oid = entries[name]
        mode = b"40000" if is_tree else b"100644"
        return b"%s %s\0%s" % (mode, name.encode(), bytes.fromhex(oid))

    body = b"".join(encode(name) for name in sorted(entries, key=sort_key))
    return hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()


def commit_oid(
    tree: str, parents: Collection[str], author: str, date: datetime, message: str
) -> str:
    """Git oid of a commit object with these fields (author and committer alike)."""
    stamp = f"{author} <{author}@users.noreply.huggingface.co> {int(date.timestamp())} +0000"
    lines = [f"tree {tree}", *(f"parent {p}" for p in parents)]
    lines += [f"author {stamp}", f"committer {stamp}"]
    body = ("\n".join(lines) + "\n\n" + message + "\n").encode()
    return hashlib.sha1(b"commit %d\0" % len(body) + body, usedforsecurity=False).hexdigest()
