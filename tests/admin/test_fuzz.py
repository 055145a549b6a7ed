"""schemathesis against the admin API's own OpenAPI document: no input makes the server fail (5xx).

Runs signed in as alice (admin everywhere) with her session cookie and CSRF token, so writes get past
authentication and reach validation, delegation and the Store. Bounded: MAX_EXAMPLES per operation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.admin.conftest import API

pytestmark = pytest.mark.lab

MAX_EXAMPLES = 25


def fuzz(base: str, doc: dict[str, Any], cookies: dict[str, str], csrf: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    http = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(
                base_url=base,
                session=http,
                cookies=cookies,
                headers={"X-Rolegate-CSRF": csrf, "Accept": "application/json"},
                timeout=30,
            )
            seen[(case.method, response.status_code)] = seen.get((case.method, response.status_code), 0) + 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} {case.body!r} -> "
                    f"{response.status_code} {response.text[:300]}"
                )

        run()
    print("fuzzed (method, status) -> count:", dict(sorted(seen.items())))
    assert any(status < 300 for _m, status in seen), "some calls must get through to a success"
    return failures


async def test_no_input_makes_the_admin_api_fail(served, clients):
    alice = await clients("alice")
    cookie_name = served.runtime.config.session.cookie_name
    cookies = {c.key: c.value for c in alice.http.cookie_jar if c.key == cookie_name}
    assert cookies, "signed in"
    status, doc, _ = await alice.call("GET", f"{API}/openapi.json")
    assert status == 200
    # requests is synchronous: run it in a thread so this loop keeps serving rolegate.
    failures = await asyncio.to_thread(fuzz, served.url, doc, cookies, alice.csrf)
    assert not failures, "\n".join(failures[:20])
    # alice is still signed in and the API still answers: the fuzzing broke nothing lasting.
    assert (await alice.call("GET", f"{API}/me"))[0] == 200
