from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.errors import ConfigError
from edgemine.mining.select import Caps, Pool, make_strategy, strategy_names


@st.composite
def pools(draw: st.DrawFn) -> tuple[Pool, int, Caps]:
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    n_events = draw(st.integers(1, 8))
    n_scen = draw(st.integers(1, 5))
    ev = rng.integers(n_events, size=n).astype(object)
    ev[rng.random(n) < 0.1] = None  # frames outside any event are uncapped
    pool = Pool(scores=rng.random(n), embeddings=rng.normal(size=(n, 4)),
                event_ids=np.array([None if e is None else f"e{e}" for e in ev], dtype=object),
                scenario_ids=np.array([f"s{s}" for s in rng.integers(n_scen, size=n)], dtype=object))
    caps = Caps(per_event=draw(st.one_of(st.none(), st.integers(1, 6))),
                per_scenario=draw(st.one_of(st.none(), st.integers(1, 10))))
    return pool, draw(st.integers(1, 80)), caps


@settings(max_examples=120, deadline=None)
@given(case=pools(), strategy=st.sampled_from(["top_score", "kcenter", "random"]))
def test_budget_and_caps_are_respected_and_picks_are_unique(case: tuple[Pool, int, Caps], strategy: str) -> None:
    pool, budget, caps = case
    order = make_strategy(strategy).select(pool, budget=budget, caps=caps)
    assert len(order) <= budget
    assert len(set(order.tolist())) == len(order)  # ranks 1..n are unique frames
    assert all(0 <= i < pool.n for i in order)
    ev = Counter(pool.event_ids[i] for i in order if pool.event_ids[i] is not None)
    sc = Counter(pool.scenario_ids[i] for i in order)
    if caps.per_event:
        assert max(ev.values(), default=0) <= caps.per_event
    if caps.per_scenario:
        assert max(sc.values(), default=0) <= caps.per_scenario
    if caps.per_event is None and caps.per_scenario is None:
        assert len(order) == min(budget, pool.n)  # nothing but the budget stops it


def test_top_score_orders_by_score() -> None:
    pool = Pool(scores=np.array([0.2, 0.9, 0.5, 0.7]))
    assert make_strategy("top_score").select(pool, budget=3).tolist() == [1, 3, 2]


def test_kcenter_spreads_the_budget_across_scenes() -> None:
    rng = np.random.default_rng(0)
    cone = rng.normal(0, 0.01, size=(40, 8))  # 40 near-identical frames of one cone, scoring highest
    others = rng.normal(0, 1, size=(10, 8)) + 5 * np.eye(10, 8)
    x = np.vstack([cone, others])
    scores = np.r_[np.full(40, 0.99), np.full(10, 0.9)]
    pool = Pool(scores=scores, embeddings=x)
    by_score = make_strategy("top_score").select(pool, budget=10)
    diverse = make_strategy("kcenter", diversity=1.0).select(pool, budget=10)
    assert (by_score < 40).all()
    assert (diverse < 40).sum() <= 2 and diverse[0] < 40  # starts with the best frame, then spreads
    assert make_strategy("kcenter", diversity=0.0).select(pool, budget=10).tolist() == by_score.tolist()


def test_caps_stop_selection_early() -> None:
    pool = Pool(scores=np.ones(10), event_ids=np.array(["e1"] * 8 + ["e2"] * 2, dtype=object))
    order = make_strategy("top_score").select(pool, budget=10, caps=Caps(per_event=3))
    assert len(order) == 5


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ConfigError, match="unknown selection strategy 'greedy'; known strategies: kcenter"):
        make_strategy("greedy")
    with pytest.raises(ConfigError, match="budget=0"):
        make_strategy("top_score").select(Pool(scores=np.ones(3)), budget=0)
    with pytest.raises(ConfigError, match="per_event_cap=0"):
        Caps(per_event=0)
    with pytest.raises(ConfigError, match="needs the pool's embeddings"):
        make_strategy("kcenter").select(Pool(scores=np.ones(3)), budget=2)
    with pytest.raises(ConfigError, match="event_ids has 2 rows but there are 3"):
        Pool(scores=np.ones(3), event_ids=np.array(["a", "b"], dtype=object))
    assert strategy_names() == ["kcenter", "random", "top_score"]
