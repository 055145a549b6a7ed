"""Rate limits slide: never more than the limit in ANY stretch of one window, wherever it starts.

Issue 17: day-pass redemption was limited per calendar minute, so a guesser spent the limit at
:59.9 and the limit again at :00.1 (twice the limit within a second), and the journey test of it
failed once when it ran across a minute boundary. Every test here injects the clock (``now``);
none reads the wall clock. The Store tests run once per backend (sqlite, postgres, postgres+redis).
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from rolegate.identity.daypass.ratelimit import allow_attempt
from rolegate.store import Store
from rolegate.store.ratelimit import WindowCounter

LIMIT, WINDOW = 5, 60.0
EDGE = 1_800_000_000.0  # a multiple of 60: a fixed one-minute window ends exactly here


def _burst_across_the_edge(hit) -> tuple[list[bool], list[bool]]:
    """LIMIT attempts just before a minute boundary, then LIMIT just after it."""
    before = [hit(EDGE - 0.1 + i * 0.001) for i in range(LIMIT)]
    after = [hit(EDGE + 0.1 + i * 0.001) for i in range(LIMIT)]
    return before, after


def test_a_guesser_cannot_get_twice_the_limit_across_a_window_edge() -> None:
    counter = WindowCounter()
    before, after = _burst_across_the_edge(lambda now: counter.hit("addr:203.0.113.9", LIMIT, WINDOW, now=now))
    assert before == [True] * LIMIT
    assert after == [False] * LIMIT  # a fixed window allowed all of these: 2x the limit in 0.2 s


def test_the_window_slides_and_refusals_do_not_extend_it() -> None:
    counter = WindowCounter()
    first = EDGE - 30.0
    assert [counter.hit("k", LIMIT, WINDOW, now=first + i) for i in range(LIMIT)] == [True] * LIMIT
    # Hammering while full is refused every time, and is not remembered.
    assert not any(counter.hit("k", LIMIT, WINDOW, now=first + LIMIT + i) for i in range(50))
    # The first hit leaves the window exactly one window after it: one place opens, then the next.
    assert counter.hit("k", LIMIT, WINDOW, now=first + WINDOW - 0.001) is False
    assert counter.hit("k", LIMIT, WINDOW, now=first + WINDOW) is True
    assert counter.hit("k", LIMIT, WINDOW, now=first + WINDOW + 0.5) is False
    assert counter.hit("k", LIMIT, WINDOW, now=first + WINDOW + 1) is True
    # Keys and window lengths count apart.
    assert counter.hit("other", LIMIT, WINDOW, now=first) is True
    assert counter.hit("k", LIMIT, 3600.0, now=first + WINDOW + 1) is True


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=40.0, allow_nan=False), min_size=1, max_size=60),
    limit=st.integers(min_value=1, max_value=6),
)
def test_no_window_anywhere_holds_more_than_the_limit(gaps: list[float], limit: int) -> None:
    counter = WindowCounter()
    now, allowed = EDGE - 100.0, []
    for gap in gaps:
        now += gap
        # Refused only when the last window already holds `limit` allowed hits (no stricter than that).
        full = sum(1 for t in allowed if now - WINDOW < t <= now) >= limit
        assert counter.hit("g", limit, WINDOW, now=now) is not full
        if not full:
            allowed.append(now)
    # The busiest window starts at an allowed hit: check every one.
    for start in allowed:
        assert sum(1 for t in allowed if start <= t < start + WINDOW) <= limit


def test_memory_stays_bounded_under_a_flood_of_keys() -> None:
    counter = WindowCounter(max_keys=100)
    for i in range(1000):
        counter.hit(f"addr:{i}", LIMIT, WINDOW, now=EDGE + i * 0.001)
    assert len(counter._hits) <= 101


# -- the shared limiters, per backend ------------------------------------------------------------------------


async def test_store_hit_slides_across_a_window_edge(store: Store) -> None:
    before = [await store.hit("addr:203.0.113.9", LIMIT, WINDOW, now=EDGE - 0.1 + i * 0.001) for i in range(LIMIT)]
    after = [await store.hit("addr:203.0.113.9", LIMIT, WINDOW, now=EDGE + 0.1 + i * 0.001) for i in range(LIMIT)]
    assert before == [True] * LIMIT and after == [False] * LIMIT
    # One window after the first hit, exactly one place has opened.
    assert await store.hit("addr:203.0.113.9", LIMIT, WINDOW, now=EDGE - 0.1 + WINDOW) is True
    assert await store.hit("addr:203.0.113.9", LIMIT, WINDOW, now=EDGE - 0.1 + WINDOW + 0.0005) is False
    assert await store.hit("addr:198.51.100.1", LIMIT, WINDOW, now=EDGE) is True  # another key


async def test_store_hit_holds_between_instances_racing_for_the_last_places(
    store: Store, other_instance: Store
) -> None:
    async def attempt(s: Store, i: int) -> bool:
        return await s.hit("pass:abc", LIMIT, WINDOW, now=EDGE - 1.0 + i * 0.01)

    results = await asyncio.gather(*(attempt(s, i) for i, s in enumerate([store, other_instance] * 10)))
    assert results.count(True) == LIMIT
    # Across the edge, neither instance grants more.
    assert not any([await attempt(s, 200 + i) for i, s in enumerate([store, other_instance] * 3)])


async def test_redemption_attempts_cannot_double_across_a_minute(store: Store) -> None:
    """The day-pass limiter itself (per address and per pass), on the shared Store."""
    before, after = [], []
    for i in range(LIMIT):
        before.append(await allow_attempt(store, "addr:203.0.113.9", LIMIT, WINDOW, now=EDGE - 0.1 + i * 0.001))
    for i in range(LIMIT):
        after.append(await allow_attempt(store, "addr:203.0.113.9", LIMIT, WINDOW, now=EDGE + 0.1 + i * 0.001))
    assert before == [True] * LIMIT and after == [False] * LIMIT
