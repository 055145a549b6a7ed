"""During a PostgreSQL outage asyncpg's pool logs each failed reconnect; rolegate's log keeps it to one line."""

from __future__ import annotations

import logging

import rolegate.store.postgres  # noqa: F401 - installs the filter on asyncpg's logger


def test_the_pool_floor_warning_is_one_line_without_a_traceback(caplog) -> None:
    logger = logging.getLogger("asyncpg.pool")
    with caplog.at_level(logging.WARNING, logger="asyncpg.pool"):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            logger.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    text = caplog.text
    assert "Traceback" not in text, text
    assert "Failed to restore the pool connection floor; retrying (ConnectionRefusedError:" in text, text
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
