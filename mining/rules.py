"""A small, safe expression language for trigger rules over manifest columns.

    accel_mps2 < -4 and label == "pedestrian"
    weather in ("fog", "rain") and not (speed_mps < 5)
    abs(yaw_rate) > 0.2

Rules are parsed with `ast` and only these nodes are allowed: `and`/`or`/`not`, comparisons (`< <= > >=
== != in`, `not in`, chains like `1 < x < 3`), `+ - * /`, unary minus, `abs(...)`, column names, and number,
string, boolean constants (tuples/lists of constants after `in`). Nothing is ever passed to `eval`; a rule
is compiled into pyarrow compute calls over an Arrow table. A null value makes a comparison false.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgemine.errors import ConfigError
from edgemine.limits import MAX_RULE_CHARS, MAX_RULE_DEPTH, quote

Value = Any  # pa.Array | pa.ChunkedArray | python scalar

_COMPARE: dict[type, str] = {
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
}
_ARITH: dict[type, str] = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide"}
_FUNCS = {"abs": "abs"}


def _const(node: ast.expr, rule: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        v = node.operand.value
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    raise ConfigError(f"trigger {rule!r}: only constants may appear in a list after 'in', got {ast.unparse(node)!r}")


@dataclass(frozen=True)
class Rule:
    """A compiled rule: `evaluate(table)` returns a boolean mask (nulls are False)."""

    name: str
    expr: str
    columns: frozenset[str]
    _fn: Callable[[pa.Table], Value]

    def check_columns(self, available: list[str] | set[str]) -> None:
        missing = sorted(self.columns - set(available))
        if missing:
            raise ConfigError(
                f"trigger {self.name!r}: unknown column(s) {missing} in {self.expr!r}; "
                f"the manifest has {sorted(available)}"
            )

    def evaluate(self, table: pa.Table) -> pa.Array:
        self.check_columns(table.column_names)
        try:
            out = self._fn(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ConfigError(f"trigger {self.name!r}: cannot evaluate {self.expr!r}: {exc}") from exc
        if not _is_arr(out):
            if not pa.types.is_boolean(out.type):
                raise ConfigError(f"trigger {self.name!r}: {self.expr!r} is not a true/false condition")
            out = pa.array([bool(out.as_py())] * table.num_rows, pa.bool_())
        if not pa.types.is_boolean(out.type):
            raise ConfigError(f"trigger {self.name!r}: {self.expr!r} is not a true/false condition")
        out = pc.fill_null(out, False)
        return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _depth(tree: ast.AST) -> int:
    """Nesting depth of an AST, walked without recursion (a hostile rule may be thousands deep)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def compile_rule(name: str, expr: str) -> Rule:
    """Parse and compile one rule; a malformed or unsafe rule raises ConfigError naming the rule."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"trigger {name!r}: the expression is empty")
    if len(expr) > MAX_RULE_CHARS:
        raise ConfigError(f"trigger {name!r}: the expression has {len(expr):,} characters; at most "
                          f"{MAX_RULE_CHARS:,} are allowed")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"trigger {name!r}: malformed expression {quote(expr)} ({exc.msg})") from exc
    except (RecursionError, MemoryError):
        raise ConfigError(f"trigger {name!r}: the expression is nested too deeply to parse") from None
    if _depth(tree) > MAX_RULE_DEPTH:
        raise ConfigError(f"trigger {name!r}: the expression nests more than {MAX_RULE_DEPTH} levels deep "
                          "(a long chain of + or and counts one level per operator)")
    columns: set[str] = set()

    def bad(node: ast.AST) -> ConfigError:
        return ConfigError(f"trigger {name!r}: {ast.unparse(node)!r} is not allowed in {expr!r} (allowed: "
                           "column names, constants, comparisons, and/or/not, + - * /, abs())")

    def comp(node: ast.expr) -> Callable[[pa.Table], Value]:
        if isinstance(node, ast.BoolOp):
            parts = [comp(v) for v in node.values]
            fn_name = "and_kleene" if isinstance(node.op, ast.And) else "or_kleene"

            def boolop(t: pa.Table) -> Value:
                acc = parts[0](t)
                for p in parts[1:]:
                    acc = pc.call_function(fn_name, [acc, p(t)])
                return acc

            return boolop
        if isinstance(node, ast.UnaryOp):
            inner = comp(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda t: pc.invert(inner(t))
            if isinstance(node.op, ast.USub):
                return lambda t: pc.negate(inner(t))
            raise bad(node)
        if isinstance(node, ast.Compare):
            left = comp(node.left)
            steps: list[Callable[[pa.Table, Value], tuple[Value, Value]]] = []
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                        raise bad(node)
                    consts = [_const(e, name) for e in right_node.elts]
                    negate = isinstance(op, ast.NotIn)

                    def in_step(t: pa.Table, lhs: Value, consts: list = consts, negate: bool = negate) -> tuple:
                        arr = lhs if _is_arr(lhs) else pa.array([lhs.as_py()] * t.num_rows, lhs.type)
                        vs = pa.array(consts)
                        if vs.type != arr.type:
                            try:
                                vs = vs.cast(arr.type)
                            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                                raise ConfigError(
                                    f"trigger {name!r}: {consts!r} cannot be compared with a {arr.type} column"
                                ) from exc
                        res = pc.is_in(arr, value_set=vs)
                        res = pc.if_else(pc.is_null(arr), pa.scalar(None, pa.bool_()), res)
                        return (pc.invert(res) if negate else res), None

                    steps.append(in_step)
                    continue
                if type(op) not in _COMPARE:
                    raise bad(node)
                right = comp(right_node)
                fname = _COMPARE[type(op)]

                def cmp_step(t: pa.Table, lhs: Value, right: Callable = right, fname: str = fname) -> tuple:
                    rhs = right(t)
                    return pc.call_function(fname, [lhs, rhs]), rhs

                steps.append(cmp_step)

            def compare(t: pa.Table) -> Value:
                lhs = left(t)
                acc = None
                for step in steps:
                    res, nxt = step(t, lhs)
                    acc = res if acc is None else pc.and_kleene(acc, res)
                    lhs = nxt
                return acc

            return compare
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _ARITH:
                raise bad(node)
            a, b = comp(node.left), comp(node.right)
            fname = _ARITH[type(node.op)]
            if fname == "divide":  # true division, as in Python
                return lambda t: pc.divide(pc.cast(a(t), pa.float64()), pc.cast(b(t), pa.float64()))
            return lambda t: pc.call_function(fname, [a(t), b(t)])
        if isinstance(node, ast.Call):
            fname_node = node.func if isinstance(node.func, ast.Name) else None
            if fname_node is None or fname_node.id not in _FUNCS or len(node.args) != 1 or node.keywords:
                raise bad(node)
            arg = comp(node.args[0])
            f = _FUNCS[fname_node.id]
            return lambda t: pc.call_function(f, [arg(t)])
        if isinstance(node, ast.Name):
            col = node.id
            if col in ("True", "False", "None"):
                raise bad(node)
            columns.add(col)
            return lambda t: t.column(col)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            v = pa.scalar(node.value)
            return lambda t: v
        raise bad(node)

    fn = comp(tree.body)
    return Rule(name=name, expr=expr, columns=frozenset(columns), _fn=fn)


def _is_arr(v: Value) -> bool:
    return isinstance(v, (pa.Array, pa.ChunkedArray))
