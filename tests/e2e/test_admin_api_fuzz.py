"""The admin API against its own OpenAPI document: the document is valid OpenAPI 3.1, and
schemathesis, generating bounded examples for every operation from it, never gets a 5xx from the
running server, with an admin token (the handlers run) or without one (the guard runs)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
from huggingface_hub.errors import HfHubHTTPError
from openapi_spec_validator import validate
from schemathesis.core.result import Ok

from proxy.admin.api import ROUTES, openapi_document
from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
UNKNOWN_PICKLE = b"cacme_tools\nLabels\n(tR."
EXAMPLES = 12  # per operation and token: 17 operations x 2 x 12 calls, about 20 s


def test_admin_openapi_document_is_valid_openapi() -> None:
    document = openapi_document()
    validate(document)  # raises OpenAPIValidationError naming the bad part
    assert len(document["paths"]) == len({r.path for r in ROUTES})


def _fuzz(base_url: str, headers: dict[str, str]) -> tuple[list[str], Counter[int]]:
    """Each operation's generated calls: what answered 5xx (method, path, status), and how many
    calls answered each status."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis could not read
        operation = result.ok()

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,  # nothing written into the checkout
            derandomize=True,  # the same calls on every run: a failure reproduces
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy())
        def call(case: Any) -> None:  # a schemathesis.Case
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        call()
    return failures, statuses


async def test_admin_api_generated_calls_never_get_a_server_error(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    with pytest.raises(HfHubHTTPError):  # one held file, so the item routes find something
        await proxy.download(MODEL, "labels.pkl")
    _, token = await proxy.app[SERVICES].identities.create("fuzz", Role.ADMIN, None, "test")
    admin = {"Authorization": f"Bearer {token}"}
    failures, statuses = await asyncio.to_thread(_fuzz, proxy.url, admin)
    assert failures == [], failures
    assert statuses[200] >= len(ROUTES) and statuses[400] > 0, statuses  # handlers ran
    failures, statuses = await asyncio.to_thread(_fuzz, proxy.url, {})
    assert failures == [] and set(statuses) == {401}, (failures, statuses)
