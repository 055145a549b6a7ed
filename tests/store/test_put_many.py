"""``Store.put_many`` (the object directory's bulk upsert, issue 19) on every backend: all or none."""

from __future__ import annotations

import pytest

from rolegate.store import Store
from rolegate.store.base import VersionConflict

NS = "scope_members"


async def test_put_many_writes_all_with_their_versions(store: Store) -> None:
    assert await store.put(NS, "workorder:1", {"parent": "customer:c100"}) == 1
    versions = await store.put_many(
        NS, [("workorder:1", {"parent": "customer:c200"}, 1), ("workorder:2", {"parent": "customer:c100"}, 0)]
    )
    assert versions == [2, 1]
    got = {r.key: (r.value["parent"], r.version) for r in await store.list(NS)}
    assert got == {"workorder:1": ("customer:c200", 2), "workorder:2": ("customer:c100", 1)}


async def test_put_many_writes_none_when_one_conflicts(store: Store) -> None:
    await store.put(NS, "workorder:1", {"parent": "customer:c100"})
    await store.put(NS, "workorder:3", {"parent": "customer:c101"})
    with pytest.raises(VersionConflict):
        await store.put_many(
            NS,
            [
                ("workorder:2", {"parent": "customer:c100"}, 0),  # would be created
                ("workorder:1", {"parent": "customer:c200"}, 1),  # would be moved
                ("workorder:3", {"parent": "customer:c200"}, 0),
            ],
        )  # exists: conflict
    got = {r.key: (r.value["parent"], r.version) for r in await store.list(NS)}
    assert got == {"workorder:1": ("customer:c100", 1), "workorder:3": ("customer:c101", 1)}, "nothing written"
