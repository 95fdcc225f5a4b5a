from __future__ import annotations

import pyarrow as pa
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.rules import compile_rule

T = pa.table({
    "accel_mps2": pa.array([-5.0, -1.0, None, -6.0], pa.float32()),
    "label": ["pedestrian", "pedestrian", "pedestrian", None],
    "speed": [1, 2, 3, 4],
    "weather": ["fog", "clear", "rain", "fog"],
})


@pytest.mark.parametrize("expr, expected", [
    ('accel_mps2 < -4 and label == "pedestrian"', [True, False, False, False]),
    ('weather in ("fog", "rain")', [True, False, True, True]),
    ('label not in ("car",)', [True, True, True, False]),
    ("1 < speed <= 3", [False, True, True, False]),
    ("abs(accel_mps2) > 4.5 or speed == 3", [True, False, True, True]),
    ("speed / 2 > 1", [False, False, True, True]),
    ("-speed < -2", [False, False, True, True]),
    ("not (speed > 2)", [True, True, False, False]),
    ("speed * 2 - 1 >= 5", [False, False, True, True]),
])
def test_rules_evaluate_over_columns_with_nulls_false(expr: str, expected: list[bool]) -> None:
    assert compile_rule("r", expr).evaluate(T).to_pylist() == expected


@pytest.mark.parametrize("expr", [
    '__import__("os").system("true")', "speed.real > 1", "[s for s in speed]", "speed > 1 if True else 0",
    "lambda: 1", "speed ** 2 > 1", "open('x')", "speed[0] > 1", "f'{speed}' == '1'",
])
def test_unsafe_expressions_are_refused_naming_the_rule(expr: str) -> None:
    with pytest.raises(ConfigError, match="trigger 'bad'.*not allowed"):
        compile_rule("bad", expr)


@pytest.mark.parametrize("expr", ["speed >", "and speed", "speed < < 2", ""])
def test_malformed_expressions_name_the_rule(expr: str) -> None:
    with pytest.raises(ConfigError, match="trigger 'broken'"):
        compile_rule("broken", expr)


def test_unknown_columns_and_type_errors_name_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"trigger 'r': unknown column\(s\) \['brake'\]"):
        compile_rule("r", "brake > 1").evaluate(T)
    with pytest.raises(ConfigError, match="trigger 'r'"):
        compile_rule("r", 'speed > "fast"').evaluate(T)
    with pytest.raises(ConfigError, match="not a true/false condition"):
        compile_rule("r", "speed + 1").evaluate(T)


@pytest.mark.parametrize("expr, message", [
    ("+".join(["speed"] * 50_000), "has 299,999 characters; at most 2,000"),
    ("+".join(["1"] * 300), "nests more than 50 levels deep"),
    ("(" * 900 + "speed" + ")" * 900, "trigger 'deep'"),
    ("not " * 400 + "speed > 1", "nests more than 50 levels deep"),
])
def test_pathological_rules_fail_naming_the_rule_not_the_interpreter(expr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        compile_rule("deep", expr)
    assert "trigger 'deep'" in str(err.value) and len(str(err.value)) < 500
