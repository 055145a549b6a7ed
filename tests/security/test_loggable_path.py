"""A day-pass link's code is a bearer credential: no log line holds it, wherever it sits in the path."""

from __future__ import annotations

import pytest

from rolegate.web.responses import loggable_path

CODE = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXhx"


@pytest.mark.parametrize(
    "path",
    [
        f"/.rolegate/pass/{CODE}",
        f"/.rolegate/pass/{CODE}/use",
        f"/.rolegate/auth/.rolegate/pass/{CODE}",  # forward-auth with Envoy's path_prefix convention
        f"//.rolegate/pass/{CODE}",
    ],
)
def test_the_code_is_masked(path: str) -> None:
    logged = loggable_path(path)
    assert CODE not in logged and logged.endswith("/.rolegate/pass/<code>")


def test_other_paths_are_logged_as_they_are() -> None:
    assert loggable_path("/workorders/1") == "/workorders/1"
