"""Issue 8 item 1: a complete offline mirror. An instance online against the fake Hub fetches;
a second instance, `offline = true` on the same data directory, serves the real clients from
the database and the store alone, under a socket guard that fails the test on any attempt to
reach anything but the offline instance's own listener.

The socket guard (`SocketGuard`, fixture `socket_guard`): pytest-socket was not used because it
allows or refuses whole hosts (the fake Hub listens on 127.0.0.1 too) and does not see asyncio's
resolver. The guard wraps `socket.socket.connect`/`connect_ex`, `socket.getaddrinfo` (the
client's threads) and the event loop's `create_connection`/`getaddrinfo` (the server's side);
anything but the allowed (host, port) is refused with ConnectionRefusedError and recorded, and
the recorded list must stay empty. It is armed before the offline instance starts and disarmed
after it stopped; the online part of each test runs unguarded.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import huggingface_hub as hf
import numpy as np
import pytest
from huggingface_hub import HfApi, HfFileSystem
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from safetensors.numpy import save

from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from proxy.store.models import BlobState
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.plugin import (
    make_gated_repo,
    make_parquet_dataset,
    make_private_repo,
    make_tiny_model,
)
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"
DATASET = "org/tiny-dataset"
GATED = "org/gated-model"
PRIVATE = "org/private-model"
WEIGHTS = "model.safetensors"
NEW_CONFIG = b'{"model_type": "bert", "hidden_size": 8, "revised": true}\n'
# A protocol-0 pickle that would call os.system("echo pwned") if anyone loaded it (never done).
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
NOT_MIRRORED = "never mirrored here and this mirror is offline; ask an administrator"
# Headers whose online and offline values must be equal (Link with the base URL replaced).
COMPARED_HEADERS = (
    "X-Repo-Commit", "ETag", "X-Linked-Etag", "X-Linked-Size", "Content-Length", "Content-Type",
    "Content-Range", "Location", "Link", "X-Total-Count", "X-Error-Code", "X-Error-Message",
)  # fmt: skip


# -- the socket guard -------------------------------------------------------------------------


@dataclass
class SocketGuard:
    """Refuses and records every attempt to connect to, or resolve, anything but `allowed`."""

    monkeypatch: pytest.MonkeyPatch
    allowed: set[tuple[str, int]] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.allowed.add((parts.hostname, parts.port))

    def check(self, what: str, host: object, port: object) -> None:
        if (str(host), _port(port)) in self.allowed:
            return
        attempt = f"{what} {host}:{port} from thread {threading.current_thread().name}"
        with self._lock:
            self.violations.append(attempt)
        raise ConnectionRefusedError(f"socket guard: {attempt} refused (the mirror is offline)")

    def check_address(self, what: str, address: object) -> None:
        if isinstance(address, tuple) and len(address) >= 2:
            self.check(what, address[0], address[1])
        else:  # a unix socket path or anything else: no offline mirror needs one
            self.check(what, address, None)

    def arm(self) -> None:
        """Wrap the socket and event-loop entry points (undone by `disarm` or at teardown)."""
        guard = self
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo
        loop_class = asyncio.BaseEventLoop
        real_create_connection = loop_class.create_connection
        real_loop_getaddrinfo = loop_class.getaddrinfo

        def connect(sock: socket.socket, address: Any) -> None:
            guard.check_address("connect", address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard.check_address("connect_ex", address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check("getaddrinfo", host, port)
            return real_getaddrinfo(host, port, *args, **kwargs)

        async def create_connection(
            loop: asyncio.BaseEventLoop, factory: Any, host: Any = None, port: Any = None,
            *args: Any, **kwargs: Any,
        ) -> Any:  # fmt: skip
            sock = kwargs.get("sock")
            if sock is None:
                guard.check("create_connection", host, port)
            else:
                guard.check_address("create_connection", sock.getpeername())
            return await real_create_connection(loop, factory, host, port, *args, **kwargs)

        async def loop_getaddrinfo(
            loop: asyncio.BaseEventLoop, host: Any, port: Any, *args: Any, **kwargs: Any
        ) -> Any:
            guard.check("loop.getaddrinfo", host, port)
            return await real_loop_getaddrinfo(loop, host, port, *args, **kwargs)

        self.monkeypatch.setattr(socket.socket, "connect", connect)
        self.monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        self.monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        self.monkeypatch.setattr(loop_class, "create_connection", create_connection)
        self.monkeypatch.setattr(loop_class, "getaddrinfo", loop_getaddrinfo)

    def disarm(self) -> None:
        self.monkeypatch.undo()


def _port(port: object) -> int | None:
    if isinstance(port, int):
        return port
    if isinstance(port, str | bytes) and port.isdigit():
        return int(port)
    return None


@pytest.fixture
def socket_guard() -> Iterator[SocketGuard]:
    """An unarmed guard; whatever it recorded while armed fails the test at teardown."""
    with pytest.MonkeyPatch.context() as patch:
        guard = SocketGuard(patch)
        yield guard
    assert guard.violations == [], "network attempts while offline"


# -- the two instances ------------------------------------------------------------------------


@asynccontextmanager
async def online_mirror(
    fake_hub: FakeHub, tmp_path: Path, **settings: object
) -> AsyncIterator[RunningProxy]:
    running, runner = await start_proxy(
        proxy_settings(fake_hub, tmp_path / "data", **settings), tmp_path / "online-cache"
    )
    try:
        yield running
    finally:
        await runner.cleanup()


@asynccontextmanager
async def offline_mirror(
    fake_hub: FakeHub, tmp_path: Path, guard: SocketGuard
) -> AsyncIterator[RunningProxy]:
    """The offline instance on the online one's data directory, under the armed guard; on a
    normal exit, no network attempt and no request reached the fake Hub."""
    fake_hub.reset_requests()
    guard.arm()
    try:
        settings = proxy_settings(fake_hub, tmp_path / "data", offline=True)
        running, runner = await start_proxy(settings, tmp_path / "offline-cache")
        guard.allow(running.url)
        try:
            yield running
        finally:
            await runner.cleanup()
    finally:
        guard.disarm()
    assert guard.violations == []
    assert fake_hub.requests == []


def api_of(proxy: RunningProxy, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=proxy.url, token=token)


# -- repos ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """The model's commits: v1 is the tiny model, `extra` adds a file, main changes config.json
    (with notes in between, so that the commit listing spans pages)."""

    repo: Repo
    v1: str
    extra: str
    main: str


def make_history(fake_hub: FakeHub, files: dict[str, bytes]) -> History:
    repo = make_tiny_model(fake_hub, files)
    v1 = repo.tag("v1")
    extra = repo.commit({"extra.txt": b"extra\n"}, message="Add extra")
    repo.commit({"notes.md": b"one\n"}, message="Notes")
    repo.commit({"notes.md": b"two\n"}, message="More notes")
    main = repo.commit({"config.json": NEW_CONFIG}, message="Bump config")
    return History(repo, v1, extra, main)


async def fetch_by_branch_tag_and_commit(proxy: RunningProxy, history: History) -> None:
    """What the online clients did: a snapshot of the default branch, one file by branch, one
    by tag, one by commit."""
    await proxy.call(
        hf.snapshot_download, MODEL, endpoint=proxy.url, cache_dir=proxy.cache_dir, token=False
    )
    await proxy.download(MODEL, "config.json", revision="main")
    await proxy.download(MODEL, "config.json", revision="v1")
    await proxy.download(MODEL, "extra.txt", revision=history.extra)


def weights(seed: int, count: int = 4) -> bytes:
    return save({"w": np.full(count, seed, dtype=np.float32)})


# -- serving by branch, tag and commit --------------------------------------------------------


async def test_offline_downloads_by_branch_tag_and_commit_give_the_upstream_bytes(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    socket_guard: SocketGuard,
) -> None:
    history = make_history(fake_hub, tiny_model_files)
    async with online_mirror(fake_hub, tmp_path) as online:
        await fetch_by_branch_tag_and_commit(online, history)
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        assert (await offline.download(MODEL, "config.json")).read_bytes() == NEW_CONFIG
        by_tag = await offline.download(MODEL, "config.json", revision="v1")
        by_commit = await offline.download(MODEL, "extra.txt", revision=history.extra)
        snapshot = await offline.call(
            hf.snapshot_download, MODEL, endpoint=offline.url, cache_dir=tmp_path / "snap"
        )
    assert by_tag.read_bytes() == tiny_model_files["config.json"]
    assert by_commit.read_bytes() == b"extra\n"
    assert Path(snapshot).name == history.main
    assert (Path(snapshot) / WEIGHTS).read_bytes() == tiny_model_files[WEIGHTS]
    assert (Path(snapshot) / "notes.md").read_bytes() == b"two\n"


async def _answer(
    session: aiohttp.ClientSession, base: str, method: str, path: str
) -> dict[str, object]:
    """Status, the compared headers and the body of one request, the base URL made neutral."""
    form = {"paths": ["config.json", WEIGHTS, "no-such-file"]} if method == "POST" else None
    async with session.request(
        method,
        base + path,
        data=form,
        allow_redirects=False,
        headers={"Accept-Encoding": "identity"},
    ) as response:
        body = await response.read()
        headers = {
            name: response.headers[name].replace(base, "{base}")
            for name in COMPARED_HEADERS
            if name in response.headers
        }
    shown: object = body
    if response.content_type == "application/json" and body:
        shown = json.loads(body)
    return {"status": response.status, "headers": headers, "body": shown}


async def _answers(base: str, paths: list[tuple[str, str]]) -> list[dict[str, object]]:
    """The answers to `paths`, following each `Link` to the last page."""
    answers: list[dict[str, object]] = []
    async with aiohttp.ClientSession() as session:
        for method, path in paths:
            while True:
                answer = await _answer(session, base, method, path)
                answers.append({"request": f"{method} {path}", **answer})
                headers = answer["headers"]
                assert isinstance(headers, dict)
                link = headers.get("Link")
                if not link:
                    break
                path = link[link.index("<{base}") + len("<{base}") : link.index(">")]
    return answers


async def test_offline_answers_every_route_with_the_headers_and_json_online_gave(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    socket_guard: SocketGuard,
) -> None:
    history = make_history(fake_hub, tiny_model_files)
    api = f"/api/models/{MODEL}"
    routes = [
        ("GET", api),
        ("GET", f"{api}/revision/main"),
        ("GET", f"{api}/revision/v1"),
        ("GET", f"{api}/revision/{history.extra}"),
        ("GET", f"{api}/tree/main?recursive=true&expand=false"),
        ("GET", f"{api}/tree/{history.main}?recursive=false&expand=false"),
        ("GET", f"{api}/tree/main/no-such-folder?recursive=false&expand=false"),
        ("POST", f"{api}/paths-info/main"),
        ("GET", f"{api}/refs"),
        ("GET", f"{api}/commits/main"),
        ("GET", f"{api}/commits/v1?expand%5B%5D=formatted"),
        ("HEAD", f"/{MODEL}/resolve/main/config.json"),
        ("HEAD", f"/{MODEL}/resolve/{history.main}/{WEIGHTS}"),
        ("HEAD", f"/{MODEL}/resolve/{history.main}/no-such-file.json"),
        ("GET", f"/{MODEL}/resolve/{history.v1}/config.json"),
    ]
    async with online_mirror(fake_hub, tmp_path) as online:
        await fetch_by_branch_tag_and_commit(online, history)
        expected = await _answers(online.url, routes)
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        answered = await _answers(offline.url, routes)
    assert answered == expected
    pages = [a for a in expected if str(a["request"]).startswith(f"GET {api}/tree/main?")]
    assert len(pages) > 1  # the tree listing is paginated (tree_page_size = 4)


async def test_offline_listings_through_the_real_client(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    socket_guard: SocketGuard,
) -> None:
    history = make_history(fake_hub, tiny_model_files)
    async with online_mirror(fake_hub, tmp_path) as online:
        await fetch_by_branch_tag_and_commit(online, history)
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        api = api_of(offline)
        refs = await offline.call(api.list_repo_refs, MODEL)
        commits = await offline.call(api.list_repo_commits, MODEL)
        tagged = await offline.call(api.list_repo_commits, MODEL, revision="v1", formatted=True)
        tree = await offline.call(lambda: list(api.list_repo_tree(MODEL, recursive=True)))
        paths = await offline.call(api.get_paths_info, MODEL, ["config.json", WEIGHTS])
        info = await offline.call(api.model_info, MODEL, revision="v1")
    repo = history.repo
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", history.main)]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", history.v1)]
    assert [c.commit_id for c in commits] == [c.sha for c in repo.history("main")]
    assert [c.title for c in commits][:2] == ["Bump config", "More notes"]
    assert [c.commit_id for c in tagged] == [c.sha for c in repo.history("v1")]
    assert tagged[0].formatted_title is not None
    assert sorted(e.path for e in tree) == sorted(repo.resolve("main").files)
    assert {p.path: p.blob_id for p in paths if isinstance(p, RepoFile)} == {
        "config.json": repo.file("config.json").oid,
        WEIGHTS: repo.file(WEIGHTS).oid,
    }
    assert info.sha == history.v1


async def test_offline_filesystem_lists_and_reads(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    socket_guard: SocketGuard,
) -> None:
    history = make_history(fake_hub, tiny_model_files)
    async with online_mirror(fake_hub, tmp_path) as online:
        await fetch_by_branch_tag_and_commit(online, history)
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        fs = HfFileSystem(endpoint=offline.url, token=False, skip_instance_cache=True)
        listed = await offline.call(fs.ls, MODEL, detail=False)
        with_sizes = await offline.call(fs.ls, MODEL, detail=True)
        config = await offline.call(lambda: fs.open(f"{MODEL}/config.json", "rb").read())
        head = await offline.call(lambda: fs.open(f"{MODEL}/{WEIGHTS}", "rb").read(16))
    names = sorted(str(name) for name in listed)
    assert names == sorted(f"{MODEL}/{p}" for p in history.repo.resolve("main").files)
    sizes = {e["name"]: e["size"] for e in with_sizes if isinstance(e, dict)}
    assert sizes[f"{MODEL}/{WEIGHTS}"] == len(tiny_model_files[WEIGHTS])
    assert config == NEW_CONFIG
    assert head == tiny_model_files[WEIGHTS][:16]


def _point_datasets_at(monkeypatch: pytest.MonkeyPatch, proxy: RunningProxy) -> None:
    import datasets.config

    # datasets keeps its own copy of HF_ENDPOINT, read at import (hub-protocol.md §1.1); its
    # side channels (the download counter on S3, datasets-server.<endpoint host>) bypass
    # HF_ENDPOINT and have no route in an air-gapped site: off, as the README tells clients.
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", proxy.url)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    monkeypatch.setattr(datasets.config, "USE_PARQUET_EXPORT", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", proxy.url)
    monkeypatch.setattr(
        "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
        proxy.url + "/{repo_id}/resolve/{revision}/{filename}",
    )


async def _load_rows(proxy: RunningProxy, cache_dir: Path) -> list[str]:
    import datasets

    dataset = await proxy.call(
        datasets.load_dataset, DATASET, split="train", cache_dir=str(cache_dir), token=False
    )
    return list(dataset["text"])


async def test_offline_load_dataset_reads_its_rows(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    make_parquet_dataset(fake_hub)
    with pytest.MonkeyPatch.context() as patch:
        async with online_mirror(fake_hub, tmp_path) as online:
            _point_datasets_at(patch, online)
            fetched = await _load_rows(online, tmp_path / "online-datasets")
    with pytest.MonkeyPatch.context() as patch:
        async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
            _point_datasets_at(patch, offline)
            rows = await _load_rows(offline, tmp_path / "offline-datasets")
    assert rows == fetched == ["hello world", "the quick brown fox", "jumps over", "the lazy dog"]


async def test_offline_whoami_names_the_local_token_and_refuses_others(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    async with online_mirror(fake_hub, tmp_path):
        pass
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        services = offline.app[SERVICES]
        _, token = await services.identities.create("team-a", Role.CLIENT, None, "test")
        me = await offline.call(api_of(offline, token).whoami)
        with pytest.raises(HfHubHTTPError, match="Invalid user token") as refused:
            await offline.call(api_of(offline, "hf_unknown").whoami)
    assert me["name"] == "team-a"
    assert refused.value.response.status_code == 401
    assert "offline mirror knows no such token" in refused.value.response.headers["X-Error-Message"]


# -- what is not mirrored ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision", "error", "message"),
    [
        ("org/never-fetched", "config.json", "main", RepositoryNotFoundError,
         "no copy of org/never-fetched"),
        (MODEL, "config.json", "v9", RevisionNotFoundError,
         f'revision "v9" of {MODEL} was {NOT_MIRRORED}'),
        # The commit fetched by hash had only extra.txt asked for: its other files are unknown.
        (MODEL, "tokenizer.json", "extra", RemoteEntryNotFoundError,
         f'"tokenizer.json" of {MODEL} at [0-9a-f]{{12}} was {NOT_MIRRORED}'),
        # main was listed whole: a file it lacks is absent, as the Hub says.
        (MODEL, "absent.json", "main", RemoteEntryNotFoundError, "^Entry not found$"),
    ],
    ids=["repo", "revision", "file-never-fetched", "file-absent-from-a-listed-commit"],
)  # fmt: skip
async def test_offline_what_is_not_mirrored_raises_the_hub_error_saying_how_to_get_it(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    socket_guard: SocketGuard,
    repo_id: str,
    filename: str,
    revision: str,
    error: type[HfHubHTTPError],
    message: str,
) -> None:
    history = make_history(fake_hub, tiny_model_files)
    async with online_mirror(fake_hub, tmp_path) as online:
        await fetch_by_branch_tag_and_commit(online, history)
    revision = history.extra if revision == "extra" else revision
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        with pytest.raises(error) as caught:
            await offline.download(repo_id, filename, revision=revision)
    assert re.search(message, caught.value.server_message or "")


async def test_offline_private_repo_refusal_reads_as_a_repo_never_mirrored(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    alice = fake_hub.add_user("alice")
    make_private_repo(fake_hub, readers=["alice"])
    async with online_mirror(fake_hub, tmp_path) as online:
        await online.download(PRIVATE, "config.json", token=alice)
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        api = api_of(offline)
        with pytest.raises(RepositoryNotFoundError) as private:
            await offline.call(api.model_info, PRIVATE)
        with pytest.raises(RepositoryNotFoundError) as unknown:
            await offline.call(api.model_info, "org/unknown-model")
    shown = [e.value.server_message or "" for e in (private, unknown)]
    assert shown[0].replace(PRIVATE, "X") == shown[1].replace("org/unknown-model", "X")
    assert private.value.response.status_code == unknown.value.response.status_code == 401


# -- gated repos and the local access list ----------------------------------------------------


async def test_offline_gated_repo_is_served_only_to_a_granted_client(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    alice = fake_hub.add_user("alice")
    make_gated_repo(fake_hub, granted=["alice"])
    async with online_mirror(fake_hub, tmp_path) as online:
        fetched = await online.download(GATED, WEIGHTS, token=alice)
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        services = offline.app[SERVICES]
        _, granted = await services.identities.create("team-a", Role.CLIENT, None, "test")
        _, other = await services.identities.create("team-b", Role.CLIENT, None, "test")
        await services.access_list.grant("team-a", f"model/{GATED}", "test")
        served = await offline.download(GATED, WEIGHTS, token=granted, cache_dir=tmp_path / "a")
        for token in (other, alice, False):
            with pytest.raises(GatedRepoError, match="local access list"):
                await offline.download(GATED, WEIGHTS, token=token, cache_dir=tmp_path / "b")
    assert served.read_bytes() == fetched.read_bytes()


# -- unhappy orders ---------------------------------------------------------------------------


async def test_offline_older_tag_asked_after_its_newer_branch_serves_each_its_bytes(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"config.json": b"{}", WEIGHTS: weights(1)})
    repo.tag("v1")
    repo.commit({WEIGHTS: weights(2)}, message="New weights")
    async with online_mirror(fake_hub, tmp_path) as online:
        await online.download(MODEL, WEIGHTS)  # main first: pinned at its head
        await online.download(MODEL, WEIGHTS, revision="v1")  # then the older tag
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        by_tag = await offline.download(MODEL, WEIGHTS, revision="v1")
        by_branch = await offline.download(MODEL, WEIGHTS, cache_dir=tmp_path / "again")
    assert (by_tag.read_bytes(), by_branch.read_bytes()) == (weights(1), weights(2))


async def _released(proxy: RunningProxy, etag: str) -> None:
    repository = proxy.app[SERVICES].repository
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        blob = await repository.get_blob(etag)
        if blob is not None and blob.state is BlobState.RELEASED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{etag} was not released in time")


async def test_offline_revision_only_seen_by_head_serves_that_file_and_refuses_its_listing(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    socket_guard: SocketGuard,
) -> None:
    history = make_history(fake_hub, tiny_model_files)
    async with online_mirror(fake_hub, tmp_path) as online:
        url = hf.hf_hub_url(MODEL, "config.json", revision="v1", endpoint=online.url)
        metadata = await online.call(hf.get_hf_file_metadata, url, token=False)
        assert metadata.commit_hash == history.v1
        await _released(online, history.repo.file("config.json", "v1").sha1)  # HEAD prefetched
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        served = await offline.download(MODEL, "config.json", revision="v1")
        with pytest.raises(RevisionNotFoundError, match=f"the file list of {MODEL} at"):
            await offline.call(
                hf.snapshot_download, MODEL, revision="v1", endpoint=offline.url,
                cache_dir=tmp_path / "snap",
            )  # fmt: skip
        commits = await offline.call(api_of(offline).list_repo_commits, MODEL, revision="v1")
    assert served.read_bytes() == tiny_model_files["config.json"]
    assert [c.commit_id for c in commits] == [c.sha for c in history.repo.history("v1")]


async def test_offline_file_whose_fetch_never_completed_is_not_mirrored(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"config.json": b"{}", WEIGHTS: weights(1, 1 << 18)})
    stall = fake_hub.stall(f"*/{WEIGHTS}", after_bytes=64 * 1024, times=10)
    async with online_mirror(fake_hub, tmp_path, **{"ingest.shutdown_grace_s": 0}) as online:
        url = f"{online.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
        async with aiohttp.ClientSession() as session, session.head(url) as response:
            assert response.status == 200  # metadata; the fetch starts in the background
        await asyncio.wait_for(stall.reached.wait(), 10)
    stall.cut()
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        with pytest.raises(RemoteEntryNotFoundError) as caught:
            await offline.download(MODEL, WEIGHTS, revision=repo.head())
    assert NOT_MIRRORED in (caught.value.server_message or "")


async def test_offline_held_file_is_refused_with_the_message_online_gave(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    repo = fake_hub.create_repo(
        MODEL, files={"config.json": b"{}", "pytorch_model.bin": MALICIOUS_PICKLE}
    )
    async with online_mirror(fake_hub, tmp_path) as online:
        with pytest.raises(HfHubHTTPError, match="held") as online_refusal:
            await online.download(MODEL, "pytorch_model.bin")
    async with offline_mirror(fake_hub, tmp_path, socket_guard) as offline:
        url = f"{offline.url}/{MODEL}/resolve/{repo.head()}/pytorch_model.bin"
        async with aiohttp.ClientSession() as session, session.head(url) as head:
            assert head.status == 200  # held files answer HEAD from metadata (§6.3)
        with pytest.raises(HfHubHTTPError, match="held") as offline_refusal:
            await offline.download(MODEL, "pytorch_model.bin", cache_dir=tmp_path / "again")
    refusals = (online_refusal.value, offline_refusal.value)
    assert [r.response.status_code for r in refusals] == [403, 403]
    assert refusals[0].server_message == refusals[1].server_message


# -- the guard itself -------------------------------------------------------------------------


async def test_socket_guard_refuses_and_records_a_connection_to_the_fake_hub(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    socket_guard.arm()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{fake_hub.url}/api/models/{MODEL}")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(socket.create_connection, ("127.0.0.1", 9), 1)
    finally:
        socket_guard.disarm()
    recorded = list(socket_guard.violations)
    socket_guard.violations.clear()
    port = str(urlsplit(fake_hub.url).port)
    assert any(port in attempt for attempt in recorded)
    assert any(":9 " in attempt for attempt in recorded)
    assert fake_hub.requests == []
