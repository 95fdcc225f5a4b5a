"""The size policy in one place (edgemine.limits)."""

from __future__ import annotations

import pytest

from edgemine.errors import ConfigError
from edgemine.limits import MAX_QUOTED_CHARS, expanded_size, load_yaml, quote


def test_quote_cuts_long_values_and_says_how_long_they_were() -> None:
    assert quote("abc") == "'abc'"
    long = quote("x" * 10_000)
    assert len(long) < MAX_QUOTED_CHARS + 40 and long.endswith("(10,002 characters)")


def test_quote_never_walks_a_huge_shared_structure() -> None:
    level: list = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9  # 9**9 leaves by reference: repr() would take minutes and gigabytes
    assert quote(level) == "<list of more than 200 values>"
    assert expanded_size(level, 1000) == 1001


def test_load_yaml_refuses_an_alias_bomb_and_reads_a_normal_spec() -> None:
    assert load_yaml("budget: 5\nsignals: {novelty: {weight: 1}}", source="s") == {
        "budget": 5, "signals": {"novelty": {"weight": 1}}}
    bomb = 'a: &a [1,1,1,1,1,1,1,1,1,1]\n' + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True))
    with pytest.raises(ConfigError, match="s: expands to more than"):
        load_yaml(bomb, source="s")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("a: [1, 2", source="s")
