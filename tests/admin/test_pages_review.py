"""The admin pages over the review service, through plain HTTP on a running Hubwarden: the
quarantine list (filters, cursor pages), a held file (release with a waiver, rescan), the waivers
page (list, filter, revoke), the summary's counts and the audit log's filters; hostile values
refused with a 400 page naming the field, hostile text shown escaped."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile

import pytest

from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from tests.admin.test_pages import (
    UNKNOWN_PICKLE,
    Answer,
    Browserless,
    browserless,
    held_file,
)
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy

MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
_ROW = re.compile(r'<tr>\s*<td><a href="/admin/quarantine/(\d+)">')


def _torch_zip() -> bytes:
    """A PyTorch zip checkpoint whose pickle imports an unknown class: held, format pytorch-zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02cacme_tools\nLabels\n)R.")
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def _pickle(tag: str) -> bytes:
    """An unknown-import pickle of its own bytes (a blob is its content: the same bytes in two
    repos are one held file)."""
    return b"cacme_tools\nLabels" + tag.encode() + b"\n(tR."


async def _held(proxy: RunningProxy, fake_hub: FakeHub, repo: str) -> int:
    return await held_file(proxy, fake_hub, repo=repo, data=_pickle(repo.replace("/", "_")))


def _covers(page: str) -> list[str]:
    """What the waivers listed on a waivers page cover, in order."""
    return re.findall(r'<td class="mono path">([^<]+)</td>', page)


def _rows(page: Answer) -> list[int]:
    """The review ids listed on a quarantine page, in order."""
    return [int(pk) for pk in _ROW.findall(page.text)]


async def _three_held(proxy: RunningProxy, fake_hub: FakeHub) -> tuple[int, int, int]:
    """A held pickle (medium) of org/m, a held zip (medium) of org/zipped, a rejected pickle
    (critical) of acme/other."""
    labels = await _held(proxy, fake_hub, "org/m")
    model = await held_file(proxy, fake_hub, repo="org/zipped", name="model.bin", data=_torch_zip())
    weights = await held_file(
        proxy, fake_hub, repo="acme/other", name="weights.pkl", data=MALICIOUS_PICKLE
    )
    return labels, model, weights


async def _release(
    client: Browserless, review_id: int, comment: str = "checked", **form: str
) -> Answer:
    return await client.send(f"/admin/quarantine/{review_id}/release", {"comment": comment, **form})


# -- the quarantine list -----------------------------------------------------------------------


async def test_pages_quarantine_filters_by_format_severity_and_state(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    labels, model, weights = await _three_held(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        assert _rows(await client.get("/admin/quarantine")) == [labels, model, weights]
        critical = await client.get("/admin/quarantine?severity=critical")
        assert _rows(critical) == [weights]
        pickles = await client.get("/admin/quarantine?format=pickle&severity=medium")
        assert _rows(pickles) == [labels, weights]
        held = await client.get("/admin/quarantine?format=pickle&state=quarantined")
        assert _rows(held) == [labels]
        assert _rows(await client.get("/admin/quarantine?format=pytorch-zip")) == [model]


async def test_pages_quarantine_rows_show_worst_finding_size_and_requests(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    review = proxy.app[SERVICES].review
    for who in ("carol", "dave"):
        await review.request_exception(review_id, "needed for the demo", who, "127.0.0.1")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get("/admin/quarantine")
    (row,) = re.findall(r"<tr>\s*<td><a href=\"/admin/quarantine/\d+\">.*?</tr>", page.text, re.S)
    assert "sev-medium" in row and "PICKLE_GLOBAL_UNKNOWN" in row
    assert f"{len(UNKNOWN_PICKLE)} B" in row
    assert re.search(r'<td class="num">2</td>\s*</tr>', row)  # asked twice


async def test_pages_quarantine_repo_filter_is_exact_or_a_prefix_ending_in_slash(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    first = await _held(proxy, fake_hub, "org/m")
    second = await _held(proxy, fake_hub, "org/m2")
    other = await _held(proxy, fake_hub, "acme/m")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        assert _rows(await client.get("/admin/quarantine?repo=org/m")) == [first]
        assert _rows(await client.get("/admin/quarantine?repo=org/")) == [first, second]
        assert _rows(await client.get("/admin/quarantine?repo=acme/")) == [other]


async def test_pages_quarantine_pages_by_cursor_keeping_the_filters(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    ids = [await _held(proxy, fake_hub, f"org/m{n}") for n in range(3)]
    await _held(proxy, fake_hub, "acme/x")  # filtered out on every page
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        first = await client.get("/admin/quarantine?repo=org/&limit=2")
        assert _rows(first) == ids[:2]
        found = re.search(r'<a href="([^"]+)" rel="next">Next page', first.text)
        assert found is not None
        link = found.group(1).replace("&amp;", "&")
        assert link == f"/admin/quarantine?repo=org%2F&limit=2&after={ids[1]}"
        last = await client.get(link)
        assert _rows(last) == ids[2:]
        assert "Last page." in last.text and 'rel="next"' not in last.text
        assert '<a href="/admin/quarantine?repo=org%2F&amp;limit=2">← First page</a>' in last.text
        exact = await client.get("/admin/quarantine?repo=org/&limit=3")
        assert _rows(exact) == ids and 'rel="next"' not in exact.text  # no empty next page
        beyond = await client.get(f"/admin/quarantine?repo=org/&after={ids[2]}")
        assert _rows(beyond) == [] and f"No more files after review #{ids[2]}" in beyond.text


async def test_pages_quarantine_with_nothing_held_says_so(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get("/admin/quarantine")
    assert page.status == 200 and "Nothing is held" in page.text and "<table" not in page.text


async def test_pages_quarantine_filter_without_match_offers_to_clear_it(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get("/admin/quarantine?repo=nobody/&severity=critical")
    assert page.status == 200 and "No file matches these filters" in page.text
    assert 'value="nobody/"' in page.text and "Clear filters" in page.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=released", "state"),
        ("repo=org/m/extra", "repo"),
        ("repo=%3Cscript%3Ealert(1)%3C/script%3E", "repo"),
        ("format=PICKLE!", "format"),
        ("severity=urgent", "severity"),
        ("since=yesterday", "since"),
        ("since=0001-01-01T00:00%2B01:00", "since"),
        ("since=99999999d", "since"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("after=-1", "after"),
        ("repo=" + "a" * 201, "repo"),
        ("repo=org%00/m", "repo"),
    ],
)
async def test_pages_quarantine_bad_filter_is_a_400_page_naming_the_field(
    proxy: RunningProxy, query: str, field: str
) -> None:
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get(f"/admin/quarantine?{query}")
    assert page.status == 400 and "<h1>That cannot be used</h1>" in page.text
    assert re.search(rf'<p class="error" role="alert">{field} &#34;', page.text), page.text
    assert "<script>" not in page.text


# -- one held file -----------------------------------------------------------------------------


async def test_pages_item_shows_revision_commit_and_exception_requests(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    await proxy.app[SERVICES].review.request_exception(review_id, "demo", "carol", "127.0.0.1")
    item = await proxy.app[SERVICES].review.item(review_id)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get(f"/admin/quarantine/{review_id}")
    assert item.blob.commit and item.blob.commit in page.text
    assert '<dt>Revisions</dt><dd class="mono">main</dd>' in page.text
    assert "<strong>1</strong> refused user asked for this file" in page.text


async def test_pages_release_with_repo_scope_and_expiry_makes_a_waiver(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER, "alice")
        answer = await _release(client, review_id, "our labels", scope="repo", expires="30d")
        assert (answer.status, answer.location) == (303, f"/admin/quarantine/{review_id}")
        page = await client.get(answer.location)
    (waiver,) = await proxy.app[SERVICES].review.waivers()
    assert waiver.covers == "repo model/org/m" and waiver.created_by == "token:alice"
    assert waiver.expires_at is not None
    left = waiver.expires_at - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < left <= dt.timedelta(days=30)
    assert f"Waiver {waiver.pk} lets later held files of repo model/org/m through" in page.text
    assert "badge state-released" in page.text


async def test_pages_release_of_these_bytes_only_makes_no_waiver(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        answer = await _release(client, review_id, scope="blob", expires="30d")
    assert answer.status == 303
    assert await proxy.app[SERVICES].review.waivers() == []


@pytest.mark.parametrize(
    ("form", "field"),
    [({"scope": "world"}, "scope"), ({"scope": "repo", "expires": "1y"}, "expires")],
)
async def test_pages_release_with_a_bad_scope_or_expiry_is_a_400_page(
    proxy: RunningProxy, fake_hub: FakeHub, form: dict[str, str], field: str
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        answer = await _release(client, review_id, **form)
    assert answer.status == 400 and f"{field} &#34;" in answer.text
    assert (await proxy.app[SERVICES].review.item(review_id)).blob.state.value == "quarantined"


async def test_pages_release_twice_is_a_409_page(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        assert (await _release(client, review_id)).status == 303
        again = await _release(client, review_id)
    assert again.status == 409 and "<h1>Already decided</h1>" in again.text


async def test_pages_rescan_says_the_new_state_and_is_audited(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER, "alice")
        path = f"/admin/quarantine/{review_id}/rescan"
        empty = await client.send(path, {"comment": " "})
        assert empty.status == 400 and "is required" in empty.text
        answer = await client.send(path, {"comment": "scanners updated"})
        assert (answer.status, answer.location) == (303, f"/admin/quarantine/{review_id}")
        page = await client.get(answer.location)
        assert "scanned again with today&#39;s scanners: still held for review" in page.text
        audit = await client.get("/admin/audit?action=review.rescanned&actor=token:alice")
        assert (
            f">review {review_id}</a>" in audit.text and "quarantined → quarantined" in audit.text
        )


async def test_pages_viewer_sees_no_decision_forms_and_each_post_is_refused(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    review = proxy.app[SERVICES].review
    waiver = await review.release(review_id, "token:root", "ok", scope="repo")
    assert waiver is not None
    second = await _held(proxy, fake_hub, "acme/x")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        item = await client.get(f"/admin/quarantine/{second}")
        waivers = await client.get("/admin/waivers")
        assert "<form method" not in item.text.split("<h2>Decision</h2>")[1]
        assert "/revoke" not in waivers.text and "can read but not revoke" in waivers.text
        for path in (
            f"/admin/quarantine/{second}/release",
            f"/admin/quarantine/{second}/reject",
            f"/admin/quarantine/{second}/rescan",
            f"/admin/waivers/{waiver.pk}/revoke",
        ):
            answer = await client.send(path, {"comment": "x", "scope": "org"})
            assert answer.status == 403 and "Your role, viewer, may not" in answer.text, path
    assert (await review.item(second)).blob.state.value == "quarantined"
    assert [w.revoked_at for w in await review.waivers()] == [None]


# -- waivers -----------------------------------------------------------------------------------


async def test_pages_waivers_list_and_revoke_a_waiver(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER, "alice")
        await _release(client, review_id, "trusted path", scope="path")
        (waiver,) = await proxy.app[SERVICES].review.waivers()
        listed = await client.get("/admin/waivers")
        assert "path model/org/m:labels.pkl" in listed.text and "trusted path" in listed.text
        assert "badge status-active" in listed.text and "never" in listed.text
        assert f'action="/admin/waivers/{waiver.pk}/revoke"' in listed.text
        answer = await client.send(
            f"/admin/waivers/{waiver.pk}/revoke", {"comment": "publisher compromised"}
        )
        assert (answer.status, answer.location) == (303, "/admin/waivers")
        after = await client.get("/admin/waivers")
        assert f"Waiver {waiver.pk} revoked" in after.text
        assert "badge status-revoked" in after.text and "/revoke" not in after.text
        audit = await client.get("/admin/audit?action=waiver.revoked")
        assert "publisher compromised" in audit.text and "token:alice" in audit.text


async def test_pages_waivers_filter_by_status(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    first = await held_file(proxy, fake_hub)
    second = await _held(proxy, fake_hub, "acme/x")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        await _release(client, first, scope="repo", expires="7d")
        await _release(client, second, scope="org")
        await client.get("/admin/waivers")  # shows (and so drops) the last release's message
        expiring = (await client.get("/admin/waivers?status=expiring")).text
        assert _covers(expiring) == ["repo model/org/m"]
        assert "in 6 d" in expiring  # 7 days less the seconds the test took
        assert _covers((await client.get("/admin/waivers?status=active")).text) == [
            "org model/acme"
        ]
        revoked = await client.get("/admin/waivers?status=revoked")
        assert "No waiver is revoked" in revoked.text
        bad = await client.get("/admin/waivers?status=forever")
        assert bad.status == 400 and "status &#34;forever&#34;" in bad.text


async def test_pages_revoke_unknown_or_malformed_waiver(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        missing = await client.send("/admin/waivers/999/revoke", {"comment": "x"})
        assert missing.status == 404 and "waiver 999 does not exist" in missing.text
        malformed = await client.send("/admin/waivers/1x/revoke", {"comment": "x"})
        assert malformed.status == 400 and "waiver id" in malformed.text


async def test_pages_waivers_page_without_waivers_says_how_one_is_made(
    proxy: RunningProxy,
) -> None:
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get("/admin/waivers")
    assert page.status == 200 and "No waiver yet" in page.text
    assert '<a href="/admin/waivers" aria-current="page">Waivers</a>' in page.text


# -- summary and audit -------------------------------------------------------------------------


async def test_pages_summary_counts_severities_waivers_and_requests(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    labels, model, _ = await _three_held(proxy, fake_hub)
    review = proxy.app[SERVICES].review
    await review.request_exception(model, "demo", "carol", "127.0.0.1")
    await review.release(labels, "token:root", "fine", scope="repo")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.VIEWER)
        page = await client.get("/admin/")

    def card(label: str) -> str:
        found = re.search(rf'<div class="n">(\d+)</div><div>{label}</div>', page.text)
        assert found is not None, label
        return found.group(1)

    assert card("held for review") == "1" and card("rejected files") == "1"
    assert card("open exception requests") == "1" and card("active waivers") == "1"
    medium = re.search(
        r'severity=medium">\s*<div class="n">(\d+)</div><div><span class="badge sev-medium">',
        page.text,
    )
    assert medium is not None and medium.group(1) == "1"
    assert "review.released" in page.text and "waiver.created" in page.text


async def test_pages_audit_filters_by_actor_repo_and_since(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    first = await held_file(proxy, fake_hub)
    second = await _held(proxy, fake_hub, "acme/x")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER, "alice")
        await _release(client, first, "alice says fine")
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER, "bob")
        await client.send(f"/admin/quarantine/{second}/reject", {"comment": "bob says no"})
        by_alice = (await client.get("/admin/audit?actor=token:alice")).text
        assert "alice says fine" in by_alice and "bob says no" not in by_alice
        about_acme = (await client.get("/admin/audit?type=model&repo=acme/x")).text
        assert f">review {second}</a>" in about_acme and f">review {first}</a>" not in about_acme
        recent = (await client.get("/admin/audit?since=10m&action=review.rejected")).text
        assert "bob says no" in recent and "alice says fine" not in recent
        future = (await client.get("/admin/audit?since=2999-01-01")).text
        assert "No event matches these filters" in future
        for query, field in (("since=soon", "since"), ("repo=a/b/c", "repo id"),
                             ("type=bucket", "type"), ("action=<b>", "action")):  # fmt: skip
            answer = await client.get(f"/admin/audit?{query}")
            assert answer.status == 400 and f"{field} &#34;" in answer.text, query


async def test_pages_show_hostile_comments_and_filters_escaped(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    hostile = '<script>alert(3)</script><img src=x onerror="alert(4)">'
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        await _release(client, review_id, hostile, scope="repo")
        pages = [
            await client.get(path)
            for path in (
                "/admin/",
                "/admin/audit",
                "/admin/waivers",
                f"/admin/quarantine/{review_id}",
                "/admin/audit?actor=%3Cscript%3Ealert(5)%3C/script%3E",
            )
        ]
    for page in pages:
        assert page.status == 200
        assert "<script>" not in page.text and "<img" not in page.text
    assert all("&lt;script&gt;alert(3)&lt;/script&gt;" in p.text for p in pages[:4])
    assert 'value="&lt;script&gt;alert(5)&lt;/script&gt;"' in pages[4].text
