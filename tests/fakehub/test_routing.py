"""The Hub URL grammar: repo ids of one or two segments, encoded and unencoded special refs."""

from __future__ import annotations

import pytest

from tests.fakehub.model import RepoKey, RepoType
from tests.fakehub.routing import Action, parse_route

SHA = "a" * 40
MODEL = RepoType.MODEL
DATASET = RepoType.DATASET


@pytest.mark.parametrize(
    ("raw_path", "action", "repo", "revision", "path"),
    [
        (
            "/org/m/resolve/main/config.json",
            Action.RESOLVE,
            ("org/m", MODEL),
            "main",
            "config.json",
        ),
        ("/gpt2/resolve/main/a/b.txt", Action.RESOLVE, ("gpt2", MODEL), "main", "a/b.txt"),
        ("/org/m/resolve/refs%2Fpr%2F1/x", Action.RESOLVE, ("org/m", MODEL), "refs/pr/1", "x"),
        ("/org/m/resolve/refs/pr/1/x", Action.RESOLVE, ("org/m", MODEL), "refs/pr/1", "x"),
        (
            "/datasets/o/d/resolve/refs/convert/parquet/default/t.parquet",
            Action.RESOLVE,
            ("o/d", DATASET),
            "refs/convert/parquet",
            "default/t.parquet",
        ),
        ("/org/m/resolve/main/a%20b.txt", Action.RESOLVE, ("org/m", MODEL), "main", "a b.txt"),
        ("/api/models/org/m", Action.INFO, ("org/m", MODEL), None, ""),
        ("/api/models/gpt2", Action.INFO, ("gpt2", MODEL), None, ""),
        ("/api/models/org/m/revision/v1", Action.INFO, ("org/m", MODEL), "v1", ""),
        ("/api/datasets/o/d/tree/main/a%2Fb", Action.TREE, ("o/d", DATASET), "main", "a/b"),
        ("/api/models/gpt2/tree/main", Action.TREE, ("gpt2", MODEL), "main", ""),
        ("/api/models/o/m/paths-info/main", Action.PATHS_INFO, ("o/m", MODEL), "main", ""),
        ("/api/models/o/m/refs", Action.REFS, ("o/m", MODEL), None, ""),
        ("/api/models/o/m/commits/main", Action.COMMITS, ("o/m", MODEL), "main", ""),
        (f"/api/models/o/m/xet-read-token/{SHA}", Action.XET_READ_TOKEN, ("o/m", MODEL), SHA, ""),
        (
            f"/api/resolve-cache/models/o/m/{SHA}/d/f",
            Action.RESOLVE_CACHE,
            ("o/m", MODEL),
            SHA,
            "d/f",
        ),
    ],
)
def test_parse_route_hub_url_gives_action_repo_revision_path(
    raw_path: str, action: Action, repo: tuple[str, RepoType], revision: str | None, path: str
) -> None:
    route = parse_route(raw_path)

    assert route is not None
    assert (route.action, route.repo, route.revision, route.path) == (
        action,
        RepoKey(repo[1], repo[0]),
        revision,
        path,
    )


@pytest.mark.parametrize(
    "raw_path",
    ["/org/m", "/api/models/org/m/discussions", "/models/x/resolve/main/y", "/org/m/resolve/main"],
)
def test_parse_route_unknown_url_gives_none(raw_path: str) -> None:
    assert parse_route(raw_path) is None


def test_route_with_repo_id_keeps_the_rest_of_the_raw_path() -> None:
    route = parse_route("/datasets/old/name/resolve/refs%2Fpr%2F1/a%20b.txt")

    assert route is not None
    assert route.with_repo_id("new/name") == "/datasets/new/name/resolve/refs%2Fpr%2F1/a%20b.txt"
