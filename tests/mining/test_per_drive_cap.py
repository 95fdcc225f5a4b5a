"""selection.per_drive_cap: never exceeded, by any strategy or the budget fill, and never the reason a
budget goes unspent while other drives still have frames to give."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.errors import ConfigError
from edgemine.mining.select import Caps, Pool, make_strategy
from edgemine.mining.select.budget import second_round, spend_rest
from edgemine.mining.select.nms import temporal_nms


@st.composite
def pools(draw: st.DrawFn) -> tuple[Pool, int, Caps]:
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    ev = rng.integers(draw(st.integers(1, 8)), size=n)
    pool = Pool(scores=rng.random(n), embeddings=rng.normal(size=(n, 4)),
                event_ids=np.array([None if rng.random() < 0.1 else f"e{e}" for e in ev], dtype=object),
                scenario_ids=np.array([f"s{s}" for s in rng.integers(draw(st.integers(1, 5)), size=n)], dtype=object),
                drive_ids=rng.integers(draw(st.integers(1, 6)), size=n))
    caps = Caps(per_event=draw(st.one_of(st.none(), st.integers(1, 6))),
                per_scenario=draw(st.one_of(st.none(), st.integers(1, 10))),
                per_drive=draw(st.one_of(st.none(), st.integers(1, 8))))
    return pool, draw(st.integers(1, 80)), caps


def blocked(pool: Pool, caps: Caps, picked: list[int], i: int) -> bool:
    """Is pool row i kept out by a cap that the picks have filled?"""
    for ids, cap in ((pool.event_ids, caps.per_event), (pool.scenario_ids, caps.per_scenario),
                     (pool.drive_ids, caps.per_drive)):
        if (ids is not None and cap is not None and ids[i] is not None
                and sum(ids[j] == ids[i] for j in picked) >= cap):
            return True
    return False


@settings(max_examples=150, deadline=None)
@given(case=pools(), strategy=st.sampled_from(["top_score", "kcenter", "random"]))
def test_strategies_never_exceed_the_drive_cap_and_stop_only_at_a_cap(case: tuple[Pool, int, Caps],
                                                                      strategy: str) -> None:
    pool, budget, caps = case
    order = make_strategy(strategy).select(pool, budget=budget, caps=caps).tolist()
    if caps.per_drive is not None:
        assert max(Counter(pool.drive_ids[i] for i in order).values(), default=0) <= caps.per_drive
    if len(order) < budget:  # the budget goes unspent only when every frame left is capped out
        assert all(blocked(pool, caps, order, i) for i in set(range(pool.n)) - set(order))


@st.composite
def fills(draw: st.DrawFn) -> tuple[Pool, Caps, np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]:
    pool, _, caps = draw(pools())
    first = make_strategy("top_score").select(
        pool, budget=draw(st.integers(1, 20)), caps=Caps(per_event=1, per_scenario=caps.per_scenario,
                                                         per_drive=caps.per_drive)) if pool.n else np.zeros(0, int)
    m = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    drives = rng.integers(8, size=m)  # fill frames may come from drives the pool does not have
    ts = rng.integers(0, 20, size=m) * 500_000  # half-second steps: the 1 s NMS window matters
    return pool, caps, first, draw(st.integers(0, 40)), rng.random(m) * 1.5, drives, ts


@settings(max_examples=200, deadline=None)
@given(case=fills())
def test_the_fill_never_exceeds_the_drive_cap_and_fills_from_other_drives(case: tuple) -> None:
    pool, caps, first, need, fscore, fdrive, fts = case
    taken = (pool.drive_ids[first], np.zeros(len(first), np.int64) - 10**9)  # round-1 picks, far away in time
    rows, more = spend_rest(pool, first, caps=caps, need=need, fill_scores=fscore, fill_drives=fdrive,
                            fill_ts_us=fts, taken=taken)
    more = more.tolist()
    assert len(more) <= need and len(set(more)) == len(more) and not set(more) & set(first.tolist())
    picked_pool = [i for i in more if i < pool.n]
    picked_fill = [int(rows[i - pool.n]) for i in more if i >= pool.n]

    def drive_counts() -> Counter:
        return Counter([*(pool.drive_ids[i] for i in [*first.tolist(), *picked_pool]),
                        *(fdrive[j] for j in picked_fill)])

    counts = drive_counts()
    if caps.per_drive is not None:
        assert max(counts.values(), default=0) <= caps.per_drive
    for j in picked_fill:  # one fill frame per drive per second
        assert not any(fdrive[k] == fdrive[j] and 0 < abs(int(fts[k]) - int(fts[j])) < 1_000_000 or
                       (k != j and fdrive[k] == fdrive[j] and fts[k] == fts[j]) for k in picked_fill)
    if len(more) < need:  # unspent only when every frame left is capped out or within a second of a pick
        at_cap = {d for d, c in counts.items() if caps.per_drive is not None and c >= caps.per_drive}
        chosen = [*picked_pool, *first.tolist()]
        no_drive_cap = Caps(per_event=caps.per_event, per_scenario=caps.per_scenario)
        for i in set(range(pool.n)) - set(chosen):  # the drive's count includes the fill frames
            assert blocked(pool, no_drive_cap, chosen, i) or pool.drive_ids[i] in at_cap
        for j in set(range(len(fscore))) - set(picked_fill):
            near = any(fdrive[k] == fdrive[j] and abs(int(fts[k]) - int(fts[j])) < 1_000_000 for k in picked_fill)
            assert near or fdrive[j] in at_cap, (j, fdrive[j], at_cap)


def test_a_capped_drive_gives_its_place_to_the_next_best_frame_of_another_drive() -> None:
    # drive 0 has the four best frames, 1 s apart; with a cap of 2 the rest of the budget goes to drive 1
    pool = Pool(scores=np.array([9.0, 8.0]), event_ids=np.array(["e1", "e2"], dtype=object),
                drive_ids=np.array([0, 0]))
    first = np.array([0])
    fscore = np.array([7.0, 6.0, 5.0, 4.0, 1.0, 0.5])
    fdrive = np.array([0, 0, 0, 0, 1, 1])
    fts = np.array([10, 20, 30, 40, 10, 20]) * 1_000_000
    rows, more = spend_rest(pool, first, caps=Caps(per_drive=2), need=3, fill_scores=fscore, fill_drives=fdrive,
                            fill_ts_us=fts, taken=(np.array([0]), np.array([0])))
    assert [int(rows[i - pool.n]) if i >= pool.n else ("pool", i) for i in more] == [("pool", 1), 4, 5]
    rows, more = spend_rest(pool, first, caps=Caps(), need=3, fill_scores=fscore, fill_drives=fdrive,
                            fill_ts_us=fts, taken=(np.array([0]), np.array([0])))
    assert [int(rows[i - pool.n]) if i >= pool.n else ("pool", i) for i in more] == [("pool", 1), 0, 1]


def test_drive_cap_inputs_are_checked() -> None:
    with pytest.raises(ConfigError, match="per_drive_cap=0"):
        Caps(per_drive=0)
    with pytest.raises(ConfigError, match="drive_ids has 1 rows but there are 2"):
        Pool(scores=np.ones(2), drive_ids=np.array([0]))
    with pytest.raises(ConfigError, match="needs the drive of every pool and fill frame"):
        second_round(Pool(scores=np.ones(2)), np.array([0]), caps=Caps(per_drive=1), fill_scores=np.ones(1), need=1)
    with pytest.raises(ConfigError, match="per_drive=0"):
        temporal_nms(np.ones(2), np.zeros(2), np.arange(2), n=1, per_drive=0)
    # the cap counts the frames chosen before
    assert temporal_nms(np.ones(3), np.zeros(3), np.arange(3) * 2_000_000, n=3, per_drive=2,
                        taken=(np.array([0]), np.array([100_000_000]))).tolist() == [0]
