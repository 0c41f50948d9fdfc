"""Subscriber-defined filters (SPEC §5): AWS EventBridge / Event-Ruler patterns over the CloudEvent.

A pattern is an object. A key names a field of the event; its value is either a nested pattern
(for a nested object) or an array of alternatives, any of which may match. All keys must match.
An alternative is an exact value (string, number, boolean, null) or an operator object::

    {"prefix": "…"}  {"suffix": "…"}         (either may take {"equals-ignore-case": "…"})
    {"equals-ignore-case": "…"}
    {"anything-but": "x" | 5 | ["x", "y"] | {"prefix"|"suffix": "…"} | {"equals-ignore-case": "…" | […]}}
    {"numeric": [">", 0, "<=", 5]}          (one comparison, or a lower and an upper bound)
    {"exists": true | false}

``"$or": [pattern, pattern, …]`` at any level matches when any of the patterns does.

Matching follows Event-Ruler:
- a field whose value is an array matches when any element does; a nested pattern under an array
  of objects must match within ONE element (so ``{"attributes": {"name": ["Device"], "value":
  ["iPhone"]}}`` needs one attribute with both);
- only leaves (strings, numbers, booleans, null) are values: a missing field, an object and an
  empty array all count as absent — matched only by ``{"exists": false}``;
- types are strict: ``"5"`` does not match ``5``, ``true`` does not match ``1``; numbers compare by
  value (``5`` matches ``5.0``);
- ``anything-but`` needs the field to be present.

The compiler checks the whole pattern first and raises ``PatternError`` naming the bad part
(``filter.data.attributes: …``, ``filter.type[0]: unknown operator 'prefx'``), then returns closures:
matching does no parsing and no dispatch on the pattern.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable
from typing import Any

from leadstream.errors import Invalid

MAX_VALUES = 1000  # alternatives and $or branches in one pattern
MAX_DEPTH = 16  # nested objects

OPERATORS = ("prefix", "suffix", "anything-but", "numeric", "exists", "equals-ignore-case")
COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq}

_MISSING: Any = object()
_EMPTY: dict[str, Any] = {}

Test = Callable[[Any], bool]


class PatternError(Invalid):
    """A filter pattern that cannot be compiled: ``"<path>: <problem>"``, the path also in ``field``."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}", field=path)
        self.path = path


class Matcher:
    """A compiled pattern: ``matcher(cloud_event_dict) -> bool``.

    ``fields`` are the top-level CloudEvent attributes the pattern reads, so a caller can skip
    decoding ``data`` when the pattern does not look at it.
    """

    __slots__ = ("_test", "fields")

    def __init__(self, test: Test, fields: frozenset[str]) -> None:
        self._test = test
        self.fields = fields

    def __call__(self, event: dict[str, Any]) -> bool:
        return self._test(event)


def compile_pattern(pattern: Any, name: str = "filter") -> Matcher:
    """Validate ``pattern`` whole and return a fast matcher over a decoded CloudEvent dict.

    Raises:
        PatternError: the pattern is invalid; the message names where (``name`` is the root).
    """
    if not isinstance(pattern, dict):
        raise PatternError(name, f"must be a JSON object, not {_kind(pattern)}")
    return Matcher(_Compiler().object(pattern, name, 0), frozenset(_top_fields(pattern)))


def _top_fields(pattern: dict[str, Any]) -> set[str]:
    fields = {key for key in pattern if key != "$or"}
    for branch in pattern.get("$or", ()):
        fields |= _top_fields(branch)
    return fields


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _leaves(values: list[Any]) -> list[Any]:
    """The scalar elements of an array, nested arrays flattened (Event-Ruler flattens them too)."""
    found = []
    for value in values:
        if isinstance(value, list):
            found.extend(_leaves(value))
        elif not isinstance(value, dict):
            found.append(value)
    return found


def _objects(values: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for value in values:
        if isinstance(value, list):
            found.extend(_objects(value))
        else:
            found.append(value if isinstance(value, dict) else _EMPTY)
    return found


class _Compiler:
    def __init__(self) -> None:
        self.values = 0

    def _count(self, path: str, n: int = 1) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise PatternError(path, f"pattern too large (more than {MAX_VALUES} values)")

    # -- objects --------------------------------------------------------------------------------

    def object(self, pattern: dict[str, Any], path: str, depth: int) -> Test:
        """A test over a dict (callers pass ``_EMPTY`` where the event has no object)."""
        if depth > MAX_DEPTH:
            raise PatternError(path, f"nested more than {MAX_DEPTH} levels deep")
        if not pattern:
            raise PatternError(path, "must not be an empty object")
        tests = []
        for key, value in pattern.items():
            where = f"{path}.{key}"
            if key == "$or":
                tests.append(self.either(value, where, depth))
            elif isinstance(value, dict):
                tests.append(_nested(key, self.object(value, where, depth + 1)))
            elif isinstance(value, list):
                tests.append(_field(key, self.leaf(value, where)))
            else:
                raise PatternError(where, f"must be an array of values to match or a nested object, not {_kind(value)}")
        if len(tests) == 1:
            return tests[0]
        every = tuple(tests)
        return lambda obj: all(test(obj) for test in every)

    def either(self, branches: Any, path: str, depth: int) -> Test:
        if not isinstance(branches, list) or len(branches) < 2:
            raise PatternError(path, "must be an array of at least 2 pattern objects")
        self._count(path, len(branches))
        tests = []
        for i, branch in enumerate(branches):
            if not isinstance(branch, dict):
                raise PatternError(f"{path}[{i}]", f"must be a pattern object, not {_kind(branch)}")
            tests.append(self.object(branch, f"{path}[{i}]", depth + 1))
        any_of = tuple(tests)
        return lambda obj: any(test(obj) for test in any_of)

    # -- leaves ---------------------------------------------------------------------------------

    def leaf(self, alternatives: list[Any], path: str) -> Test:
        """A test over one field's value (``_MISSING`` when absent)."""
        if not alternatives:
            raise PatternError(path, "must not be an empty array")
        self._count(path, len(alternatives))
        strings: set[str] = set()
        numbers: set[int | float] = set()
        booleans: set[bool] = set()
        null = exists_true = exists_false = False
        predicates: list[Test] = []
        for i, alternative in enumerate(alternatives):
            where = f"{path}[{i}]"
            if isinstance(alternative, str):
                strings.add(alternative)
            elif isinstance(alternative, bool):
                booleans.add(alternative)
            elif _is_number(alternative):
                numbers.add(alternative)
            elif alternative is None:
                null = True
            elif isinstance(alternative, dict):
                name, operand = _operator(alternative, where, OPERATORS)
                if name == "exists":
                    if not isinstance(operand, bool):
                        raise PatternError(f"{where}.exists", f"must be true or false, not {_kind(operand)}")
                    exists_true |= operand
                    exists_false |= not operand
                else:
                    predicates.append(_BUILDERS[name](operand, f"{where}.{name}"))
            elif isinstance(alternative, list):
                raise PatternError(where, "arrays cannot be nested; list the alternatives side by side")
            else:
                raise PatternError(where, f"unsupported value of type {_kind(alternative)}")

        def scalar(value: Any) -> bool:
            if isinstance(value, str):
                if value in strings:
                    return True
            elif value is None:
                if null:
                    return True
            elif isinstance(value, bool):
                if value in booleans:
                    return True
            elif value in numbers:
                return True
            return any(predicate(value) for predicate in predicates)

        def test(value: Any) -> bool:
            if value is _MISSING or isinstance(value, dict):
                return exists_false
            if isinstance(value, list):
                values = _leaves(value)
                if not values:
                    return exists_false
                return exists_true or any(scalar(v) for v in values)
            return exists_true or scalar(value)

        return test


def _field(key: str, test: Test) -> Test:
    return lambda obj: test(obj.get(key, _MISSING))


def _nested(key: str, test: Test) -> Test:
    def nested(obj: dict[str, Any]) -> bool:
        value = obj.get(key, _MISSING)
        if isinstance(value, dict):
            return test(value)
        if isinstance(value, list) and value:
            return any(test(element) for element in _objects(value))  # all keys within ONE element
        return test(_EMPTY)  # absent: only exists:false leaves can match

    return nested


def _operator(alternative: dict[str, Any], where: str, allowed: tuple[str, ...]) -> tuple[str, Any]:
    if len(alternative) != 1:
        raise PatternError(
            where, f'an operator object has exactly one key, like {{"prefix": "…"}}; got {len(alternative)}'
        )
    ((name, operand),) = alternative.items()
    if name not in allowed:
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (use one of: {', '.join(allowed)})"
        raise PatternError(where, f"unknown operator {name!r}{hint}")
    return name, operand


# -- operators: each checks its operand and returns a predicate over one scalar ------------------


def _text(operand: Any, where: str) -> tuple[str, bool]:
    """A string operand, or ``{"equals-ignore-case": "…"}``: (text, ignore_case)."""
    if isinstance(operand, str):
        return operand, False
    if isinstance(operand, dict):
        _, inner = _operator(operand, where, ("equals-ignore-case",))
        if isinstance(inner, str):
            return inner.casefold(), True
        raise PatternError(f"{where}.equals-ignore-case", f"must be a string, not {_kind(inner)}")
    raise PatternError(where, f"must be a string, not {_kind(operand)}")


def _prefix(operand: Any, where: str) -> Test:
    text, fold = _text(operand, where)
    if fold:
        return lambda v: isinstance(v, str) and v.casefold().startswith(text)
    return lambda v: isinstance(v, str) and v.startswith(text)


def _suffix(operand: Any, where: str) -> Test:
    text, fold = _text(operand, where)
    if fold:
        return lambda v: isinstance(v, str) and v.casefold().endswith(text)
    return lambda v: isinstance(v, str) and v.endswith(text)


def _equals_ignore_case(operand: Any, where: str) -> Test:
    if not isinstance(operand, str):
        raise PatternError(where, f"must be a string, not {_kind(operand)}")
    folded = operand.casefold()
    return lambda v: isinstance(v, str) and v.casefold() == folded


def _anything_but(operand: Any, where: str) -> Test:
    if isinstance(operand, dict):
        name, inner = _operator(operand, where, ("prefix", "suffix", "equals-ignore-case"))
        if name == "equals-ignore-case":
            texts = inner if isinstance(inner, list) else [inner]
            if not texts or not all(isinstance(t, str) for t in texts):
                raise PatternError(f"{where}.{name}", "must be a string or a non-empty array of strings")
            folded = {t.casefold() for t in texts}
            return lambda v: not (isinstance(v, str) and v.casefold() in folded)
        excluded = _BUILDERS[name](inner, f"{where}.{name}")
        return lambda v: not excluded(v)
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise PatternError(where, "must not be an empty array")
    strings: set[str] = set()
    numbers: set[int | float] = set()
    for i, value in enumerate(values):
        if isinstance(value, str):
            strings.add(value)
        elif _is_number(value):
            numbers.add(value)
        else:
            at = f"{where}[{i}]" if isinstance(operand, list) else where
            raise PatternError(
                at,
                "must be a string, a number, an array of them, or a prefix/suffix/equals-ignore-case"
                f" object, not {_kind(value)}",
            )

    def anything_but(v: Any) -> bool:
        if isinstance(v, str):
            return v not in strings
        if _is_number(v):
            return v not in numbers
        return True  # booleans and null are never among the excluded strings and numbers

    return anything_but


def _numeric(operand: Any, where: str) -> Test:
    shape = 'must be an array like [">", 0] or [">", 0, "<=", 5]'
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise PatternError(where, shape)
    bounds = []
    for i in range(0, len(operand), 2):
        symbol, limit = operand[i], operand[i + 1]
        if symbol not in COMPARISONS:
            raise PatternError(f"{where}[{i}]", f"unknown comparison {symbol!r} (use <, <=, >, >=, =)")
        if not _is_number(limit):
            raise PatternError(f"{where}[{i + 1}]", f"must be a number after {symbol!r}, not {_kind(limit)}")
        bounds.append((symbol, limit))
    if len(bounds) == 2:
        lower, upper = sorted(bounds, key=lambda bound: bound[0] not in (">", ">="))
        if lower[0] not in (">", ">=") or upper[0] not in ("<", "<="):
            raise PatternError(where, "a range needs one lower bound (> or >=) and one upper bound (< or <=)")
        if not lower[1] < upper[1]:
            raise PatternError(where, f"empty range: {lower[1]} is not below {upper[1]}")
    checks = tuple((COMPARISONS[symbol], limit) for symbol, limit in bounds)
    return lambda v: _is_number(v) and all(compare(v, limit) for compare, limit in checks)


_BUILDERS: dict[str, Callable[[Any, str], Test]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "anything-but": _anything_but,
    "numeric": _numeric,
    "equals-ignore-case": _equals_ignore_case,
}
