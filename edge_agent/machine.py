"""The machine model: tag values in, machine state changes and part count deltas out.

Pure: no I/O and no clock. The agent feeds every machine its samples (in the order read)
and publishes the events :meth:`MachineModel.update` and :meth:`MachineModel.flush` return.

State comes from one tag or from a safe expression over tags, through a map of raw codes
to states and reasons. Counters (total, good, reject, and optionally one per reject reason)
are monotonic PLC registers turned into deltas that survive rollover and resets; deltas are
accumulated and emitted as one CountEvent per flush (the rules are in ``counters.py``).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import structlog

from edge_agent.config import MachineConfig, StateCode, StateSource
from edge_agent.contract import Event, Quality, Sample, StateEvent, Value
from edge_agent.counters import CounterTracker, Counts, Reading
from edge_agent.errors import EdgeError
from edge_agent.logs import FailureGate

__all__ = ["CounterTracker", "Expression", "ExpressionError", "MachineModel"]

NO_DATA: Final = StateCode(state="unknown", reason="no data")
EXPRESSION_FAILED: Final = StateCode(state="unknown", reason="expression error")
MAX_EXPRESSION_CHARS: Final = 2000
MAX_CODE_CHARS: Final = 64
_INT_TEXT = re.compile(r"^[+-]?\d+$")


# ---------------------------------------------------------------- safe expressions


class ExpressionError(EdgeError, ValueError):
    """A state expression that is not allowed, or that fails on the values it got."""


Env = Mapping[str, Value]
_Fn = Callable[[Env], Any]

_ARITH: Final[dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.Mod: ("%", operator.mod),
    ast.BitAnd: ("&", operator.and_),
    ast.BitOr: ("|", operator.or_),
    ast.RShift: (">>", operator.rshift),
    ast.LShift: ("<<", operator.lshift),
}
_COMPARE: Final[dict[type[ast.cmpop], Callable[[Any, Any], Any]]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_UNARY: Final[dict[type[ast.unaryop], Callable[[Any], Any]]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_NAMES: Final[dict[type[ast.AST], str]] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripting",
    ast.Lambda: "lambda",
    ast.Call: "function call",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Dict: "dict literal",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Starred: "starred expression",
    ast.Slice: "slice",
    ast.Pow: "operator **",
    ast.FloorDiv: "operator //",
    ast.BitXor: "operator ^",
    ast.MatMult: "operator @",
    ast.Invert: "operator ~",
    ast.Is: "operator is",
    ast.IsNot: "operator is not",
}


def _construct(node: ast.AST) -> str:
    return _NAMES.get(type(node), type(node).__name__)


class Expression:
    """A state expression over tag values, compiled once; nothing but arithmetic and logic.

    Allowed: literals (numbers, strings, booleans, tuples and lists of them), tag names,
    ``tag("name.with.dots")``, comparisons (chained too, and ``in``), ``and or not``,
    ``+ - * / %``, ``& | >> <<``, unary ``-`` and ``a if c else b``. Anything else raises
    ExpressionError (a ValueError) naming the construct.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        if len(source) > MAX_EXPRESSION_CHARS:
            raise ExpressionError(f"expression is over {MAX_EXPRESSION_CHARS} characters")
        names: set[str] = set()
        try:
            # A YAML block scalar may span lines; an expression is one line of Python.
            tree = ast.parse(" ".join(source.split("\n")).strip(), mode="eval")
            if isinstance(tree.body, (ast.Tuple, ast.List)):
                raise self._fail(tree.body, "a tuple or list as the result")
            self._fn = self._compile(tree.body, names)
        except SyntaxError as err:
            raise ExpressionError(f"expression {source!r} is not valid: {err.msg}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"expression {source!r} is nested too deeply") from None
        self.names = frozenset(names)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, values: Env) -> Any:
        """Evaluate with the given tag values; every name in ``names`` must be present."""
        try:
            return self._fn(values)
        except ExpressionError:
            raise
        except KeyError as err:
            raise ExpressionError(f"expression {self.source!r}: no value for {err}") from None
        except (ArithmeticError, TypeError, ValueError, RecursionError) as err:
            raise ExpressionError(f"expression {self.source!r} failed: {err}") from None

    def _fail(self, node: ast.AST, what: str | None = None) -> ExpressionError:
        return ExpressionError(
            f"expression {self.source!r}: {what or _construct(node)} is not allowed"
            " (use tag names, literals, comparisons, and/or/not, + - * / %, & | >> <<,"
            " 'a if c else b' and tag('name'))"
        )

    def _compile(self, node: ast.AST, names: set[str]) -> _Fn:
        """Turn a node into a closure, refusing anything outside the allowed set."""
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            names.add(node.id)
            return operator.itemgetter(node.id)
        if isinstance(node, ast.Call):
            name = self._tag_call(node)
            names.add(name)
            return operator.itemgetter(name)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self._compile(e, names) for e in node.elts]
            return lambda env: tuple(f(env) for f in items)
        if isinstance(node, ast.BinOp):
            return self._binop(node, names)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            op1, arg = _UNARY[type(node.op)], self._compile(node.operand, names)
            return lambda env: op1(arg(env))
        if isinstance(node, ast.BoolOp):
            return self._boolop(node, names)
        if isinstance(node, ast.Compare):
            return self._compare(node, names)
        if isinstance(node, ast.IfExp):
            test, a, b = (self._compile(n, names) for n in (node.test, node.body, node.orelse))
            return lambda env: a(env) if test(env) else b(env)
        raise self._fail(node.op if isinstance(node, ast.UnaryOp) else node)

    def _constant(self, node: ast.Constant) -> _Fn:
        value = node.value
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise self._fail(node, f"a {type(value).__name__} literal")
        return lambda env: value

    def _tag_call(self, node: ast.Call) -> str:
        func = node.func
        if not isinstance(func, ast.Name):
            raise self._fail(func)
        if func.id != "tag":
            raise self._fail(node, f"calling {func.id}()")
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise self._fail(node, "tag() with anything but one string literal")
        return arg.value

    def _binop(self, node: ast.BinOp, names: set[str]) -> _Fn:
        if type(node.op) not in _ARITH:
            raise self._fail(node.op)
        symbol, fn = _ARITH[type(node.op)]
        left, right = self._compile(node.left, names), self._compile(node.right, names)
        shift = isinstance(node.op, (ast.LShift, ast.RShift))

        def run(env: Env) -> Any:
            a, b = left(env), right(env)
            if isinstance(a, str) or isinstance(b, str):
                raise ExpressionError(f"operator {symbol} needs numbers, got {a!r} and {b!r}")
            if shift and isinstance(b, int) and not 0 <= b <= 64:
                raise ExpressionError(f"shift by {b} is outside 0..64")
            return fn(a, b)

        return run

    def _boolop(self, node: ast.BoolOp, names: set[str]) -> _Fn:
        parts = [self._compile(v, names) for v in node.values]
        # Python semantics: `and` stops at the first falsy value, `or` at the first truthy.
        stop_when = not isinstance(node.op, ast.And)

        def run(env: Env) -> Any:
            result: Any = None
            for p in parts:
                result = p(env)
                if bool(result) is stop_when:
                    return result
            return result

        return run

    def _compare(self, node: ast.Compare, names: set[str]) -> _Fn:
        ops = []
        for op in node.ops:
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise self._fail(op)
            ops.append(fn)
        first = self._compile(node.left, names)
        rest = [self._compile(c, names) for c in node.comparators]

        def run(env: Env) -> bool:
            a = first(env)
            for fn, get in zip(ops, rest, strict=True):
                b = get(env)
                if not fn(a, b):
                    return False
                a = b
            return True

        return run


# ---------------------------------------------------------------- state


def _code_of(value: Any) -> int | str:
    """A raw state value as a map key: bools and whole floats become ints.

    What cannot travel as a code (an int over 64 bits, anything not int or str) becomes a
    string, cut to MAX_CODE_CHARS so the event stays within the contract.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_CODE_CHARS]


def _lookup(codes: Mapping[int | str, StateCode], code: int | str) -> StateCode | None:
    """Find a code, matching 3 with "3" either way (YAML keys may be quoted or not)."""
    hit = codes.get(code)
    if hit is None and isinstance(code, int):
        hit = codes.get(str(code))
    elif hit is None and isinstance(code, str) and _INT_TEXT.match(code):
        hit = codes.get(int(code))
    return hit


class _StateTracker:
    """Turns the values of the state tag(s) into StateEvents on change."""

    def __init__(self, source: StateSource, log: Any) -> None:
        self._source = source
        if source.expression is not None:
            self._expr: Expression | None = Expression(source.expression)
            self.names = self._expr.names
        else:
            self._expr = None
            self.names = frozenset({source.tag or ""})
        self._values: dict[str, Value] = {}
        self._bad: set[str] = set()
        self._last: tuple[str, int | str | None, str | None] | None = None
        self._gate = FailureGate(log, what="state expression")
        self._pending_ts: int | None = None

    def apply(self, s: Sample) -> list[Event]:
        """Take a sample of a state tag; evaluate once per run of equal timestamps."""
        out = []
        if self._pending_ts is not None and s.ts != self._pending_ts:
            out = self.settle()
        if s.quality is Quality.BAD or s.value is None:
            self._bad.add(s.tag)
        else:
            self._bad.discard(s.tag)
            self._values[s.tag] = s.value
        self._pending_ts = s.ts
        return out

    def settle(self) -> list[Event]:
        """Evaluate the state for the pending timestamp; an event if it changed."""
        ts, self._pending_ts = self._pending_ts, None
        if ts is None:
            return []
        if self._bad:
            return self._emit(ts, NO_DATA, None)
        if len(self._values) < len(self.names):
            return []  # not every tag has a value yet: no state yet
        try:
            raw = self._read()
        except ExpressionError as err:
            self._gate.failed(err)
            return self._emit(ts, EXPRESSION_FAILED, None)
        self._gate.ok()
        code = _code_of(raw)
        hit = _lookup(self._source.codes, code)
        if hit is None:
            hit = StateCode(state=self._source.default.state, reason=f"unknown code {code}")
        return self._emit(ts, hit, code)

    def _read(self) -> Any:
        if self._expr is None:
            return self._values[self._source.tag or ""]
        return self._expr.evaluate(self._values)

    def _emit(self, ts: int, sc: StateCode, code: int | str | None) -> list[Event]:
        key = (sc.state, code, sc.reason)
        if key == self._last:
            return []
        self._last = key
        return [StateEvent(ts=ts, state=sc.state, code=code, reason=sc.reason)]


# ---------------------------------------------------------------- the model


class MachineModel:
    """State and counts of one machine, from the samples of its tags."""

    def __init__(self, config: MachineConfig) -> None:
        self.name = config.name
        self._log = structlog.get_logger("edge_agent.machine").bind(machine=config.name)
        self._state = _StateTracker(config.state, self._log) if config.state else None
        self._counters: dict[str, tuple[str, CounterTracker]] = {}  # tag -> (role, tracker)
        self._reasons: dict[str, tuple[str, CounterTracker]] = {}  # tag -> (reason, tracker)
        self._counts: Counts | None = None
        if config.counters is not None:
            given = {
                role: c
                for role in ("total", "good", "reject")
                if (c := getattr(config.counters, role)) is not None
            }
            self._counts = Counts(frozenset(given))
            for role in self._counts.roles:
                tracker = CounterTracker(given[role], self._log)
                self._counters[tracker.tag] = (role, tracker)
            for reason, counter in (config.reject_reasons or {}).items():
                tracker = CounterTracker(counter, self._log.bind(reason=reason))
                self._reasons[tracker.tag] = (reason, tracker)
        self._product_tag = config.product
        self.product: str | None = None
        names = set(self._counters) | set(self._reasons)
        if self._state is not None:
            names |= self._state.names
        if config.product is not None:
            names.add(config.product)
        self._tags = frozenset(names)

    @property
    def tags(self) -> frozenset[str]:
        """The tags this machine listens to; samples of other tags are ignored."""
        return self._tags

    def update(self, samples: Iterable[Sample]) -> list[Event]:
        """Take samples in the order read; return state changes (and counts a product
        change flushed)."""
        out: list[Event] = []
        for s in samples:
            if s.tag not in self._tags:
                continue
            if self._state is not None and s.tag in self._state.names:
                out += self._state.apply(s)
            if self._counts is not None:
                if (counter := self._counters.get(s.tag)) is not None:
                    self._counts.add(counter[0], counter[1].delta(s), s.ts)
                if (reason := self._reasons.get(s.tag)) is not None:
                    self._counts.add_reason(reason[0], reason[1].delta(s), s.ts)
            if s.tag == self._product_tag:
                out += self._set_product(s)
        if self._state is not None:
            out += self._state.settle()
        return out

    def flush(self, now_ms: int) -> list[Event]:
        """Emit the count deltas pending since the last flush as one CountEvent, if any.

        ``now_ms`` is not needed today: the event carries the source time of the latest
        contributing sample.
        """
        if self._counts is None:
            return []
        event = self._counts.take(self.product)
        return [] if event is None else [event]

    def checkpoint(self) -> dict[str, Any]:
        """What must survive a restart so no part is counted twice or lost.

        The agent stores it in the outbox in the same transaction as the events it
        flushed, so the counter baselines always match what was already emitted.
        """
        counters = {tag: [t.prev.value, t.prev.ts] for tag, t in self._trackers().items() if t.prev}
        counts = self._counts
        return {
            "counters": counters,
            "pending": dict(counts.pending) if counts else {},
            # a list, not an object: the order (oldest first) decides what is emitted first
            "reasons": [[r, n] for r, n in counts.reasons.items()] if counts else [],
            "ts": counts.ts if counts else None,
            "product": self.product,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Continue from a checkpoint: parts made while the agent was down are counted."""
        trackers = self._trackers()
        for tag, (value, ts) in dict(data.get("counters") or {}).items():
            if tag in trackers and isinstance(value, int) and isinstance(ts, int):
                trackers[tag].prev = Reading(value, ts)
        if self._counts is not None:
            for role, n in dict(data.get("pending") or {}).items():
                if role in self._counts.pending and isinstance(n, int) and n >= 0:
                    self._counts.pending[role] = n
            configured = {reason for reason, _ in self._reasons.values()}
            for item in data.get("reasons") or []:
                # a reason dropped from the config loses its attribution, not its parts
                reason, n = item if isinstance(item, list) and len(item) == 2 else (None, 0)
                if reason in configured and isinstance(n, int) and n > 0:
                    self._counts.reasons[reason] = n
            ts = data.get("ts")
            self._counts.ts = ts if isinstance(ts, int) else None
        product = data.get("product")
        if isinstance(product, str) and product:
            self.product = product

    def _trackers(self) -> dict[str, CounterTracker]:
        """Every counter this machine reads, by tag."""
        return {tag: t for tag, (_, t) in (self._counters | self._reasons).items()}

    def _set_product(self, s: Sample) -> list[Event]:
        # A BAD product tag keeps the last known product: counts go on under it.
        if s.quality is Quality.BAD or s.value is None or s.value == "":
            return []
        product = str(s.value)
        if product == self.product:
            return []
        # The first product seen is adopted without a flush: counts pending before the
        # product was known belong to it (at start-up, the tags arrive in one scan).
        out = self.flush(s.ts) if self.product is not None else []
        self.product = product
        return out
