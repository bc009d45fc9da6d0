"""Scripts: timed actions on the simulated line, so a test knows exactly what to expect.

A script is YAML with a list of actions; ``at`` is simulated seconds since the start
(a number, or ``"90s"``, ``"2m"``, ``"250ms"``). Actions due at the same time run in file
order, before the tick at that time is shown. Each action does one thing::

    actions:
      - {at: 0, freeze: true}                          # no random stops, no noise
      - {at: 5, machine: filler, state: 21, for: 30}   # a 30 s jam; without ``for``: until changed
      - {at: 10, machine: filler, counter: total, value: 65530}
      - {at: 12, machine: filler, counter: reject.underfill, value: 4294967290}
      - {at: 60, machine: all, reset: both}            # total | reject | both; default: all
      - {at: 90, changeover: SKU-2210, order: ORD-240100, for: 300}
      - {at: 120, product: SKU-1043, order: ORD-240101}   # machine defaults to all
      - {at: 200, freeze: false}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.errors import ConfigError
from edge_agent.simulator.line import DEFAULT_LINE, MAX_STRING, MachineSpec, SimulatorError
from edge_agent.simulator.model import LineModel
from edge_agent.units import parse_duration

Kind = Literal["state", "counter", "reset", "product", "changeover", "freeze"]
_KINDS: tuple[Kind, ...] = ("state", "counter", "reset", "product", "changeover", "freeze")


class ScriptError(ConfigError):
    """A script file is wrong; the message names the file, line and field."""


def _seconds(value: object) -> float:
    return parse_duration(value, allow_zero=True)


def _is_reason(counter: str) -> bool:
    return counter.startswith("reject.") and len(counter) > len("reject.")


class _ActionIn(BaseModel):
    """One action as written in the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: float
    machine: str | None = None
    state: int | None = Field(default=None, ge=0, le=65535)
    for_: float | None = Field(default=None, alias="for")
    counter: str | None = None  # total, reject, or reject.<reason>
    value: int | None = Field(default=None, ge=0)
    reset: Literal["total", "reject", "both"] | None = None
    product: str | None = None
    changeover: str | None = None
    order: str | None = None
    freeze: bool | None = None

    @field_validator("at", "for_", mode="before")
    @classmethod
    def _time(cls, v: object) -> float | None:
        return None if v is None else _seconds(v)

    @field_validator("counter")
    @classmethod
    def _counter(cls, v: str | None) -> str | None:
        if v is not None and v not in ("total", "reject") and not _is_reason(v):
            raise ValueError(f"must be total, reject or reject.<reason>, not {v!r}")
        return v

    @field_validator("product", "changeover", "order")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not (0 < len(v) <= MAX_STRING and v.isascii()):
            raise ValueError(f"must be 1..{MAX_STRING} ASCII characters (8 Modbus registers)")
        return v

    @model_validator(mode="after")
    def _one_thing(self) -> _ActionIn:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"an action does exactly one of {', '.join(_KINDS)}; this one has {given or 'none'}"
            )
        kind = given[0]
        if (self.counter is None) != (self.value is None):
            raise ValueError("counter and value go together: {counter: total, value: 65530}")
        if self.for_ is not None and kind not in ("state", "changeover"):
            raise ValueError("'for' applies only to state and changeover")
        if self.order is not None and kind not in ("product", "changeover"):
            raise ValueError("'order' applies only to product and changeover")
        if kind == "counter" and self.machine in (None, "all"):
            raise ValueError("counter needs one machine, e.g. machine: filler")
        if kind in ("changeover", "freeze") and self.machine is not None:
            raise ValueError(f"{kind} applies to the whole line: drop 'machine'")
        if self.for_ is not None and self.for_ <= 0:
            raise ValueError("'for' must be longer than zero")
        return self

    @property
    def kind(self) -> Kind:
        kind: Kind = next(k for k in _KINDS if getattr(self, k) is not None)
        return kind


@dataclass(frozen=True, slots=True)
class Action:
    """A validated action; ``apply`` performs it on a model."""

    at: float
    kind: Kind
    machine: str | None = None
    code: int | None = None
    duration: float | None = None
    counter: str | None = None  # total, reject or reject.<reason>
    value: int | None = None
    text: str | None = None  # product code
    order: str | None = None
    flag: bool | None = None

    def apply(self, model: LineModel) -> None:
        """Perform the action on ``model``."""
        if self.kind == "state" and self.code is not None:
            model.set_state(self.machine, self.code, duration=self.duration)
        elif self.kind == "counter" and self.machine and self.counter and self.value is not None:
            if _is_reason(self.counter):
                model.set_reason_counter(self.machine, self.counter[len("reject.") :], self.value)
            else:
                model.set_counter(self.machine, "reject" if self.counter == "reject" else "total",
                                  self.value)  # fmt: skip
        elif self.kind == "reset":
            model.reset_counter(self.machine, _reset(self.counter))
        elif self.kind == "product" and self.text:
            model.set_product(self.text, order=self.order, machine=self.machine)
        elif self.kind == "changeover" and self.text:
            model.changeover(self.text, order=self.order, duration=self.duration or 300.0)
        elif self.kind == "freeze":
            (model.freeze if self.flag else model.unfreeze)()


@dataclass(frozen=True, slots=True)
class Script:
    """Actions sorted by time (file order kept among equal times)."""

    actions: tuple[Action, ...]

    @classmethod
    def of(cls, actions: list[Action]) -> Script:
        return cls(tuple(sorted(actions, key=lambda a: a.at)))


def _reset(counter: str | None) -> Literal["total", "reject"] | None:
    return "total" if counter == "total" else "reject" if counter == "reject" else None


def _action(a: _ActionIn) -> Action:
    kind = a.kind
    reset = a.reset if a.reset in ("total", "reject") else None
    return Action(
        at=a.at,
        kind=kind,
        machine=a.machine,
        code=a.state,
        duration=a.for_,
        counter=a.counter if kind == "counter" else reset,
        value=a.value,
        text=a.product if kind == "product" else a.changeover,
        order=a.order,
        flag=a.freeze,
    )


def parse_script(
    data: Any,
    *,
    source: str = "<script>",
    lines: dict[int, int] | None = None,
    line: Sequence[MachineSpec] = DEFAULT_LINE,
) -> Script:
    """Validate parsed YAML (``{"actions": [...]}``) into a Script for ``line``.

    Each action is also tried on a scratch model of the line, so anything the line would
    refuse at run time (a counter value too wide, a machine it lacks) fails here, named.
    """
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        raise ScriptError(f"{source}:1: a script is a mapping with a list under 'actions'")
    extra = set(data) - {"actions", "description"}
    if extra:
        raise ScriptError(f"{source}:1: unknown top-level keys {sorted(extra)}: use actions")
    scratch = LineModel(machines=line, frozen=True)
    actions = []
    for i, raw in enumerate(data["actions"]):
        where = f"{source}:{(lines or {}).get(i, 1)}: actions[{i}]"
        try:
            action = _action(_ActionIn.model_validate(raw))
            action.apply(scratch)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'action'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in err.errors()
            )
            raise ScriptError(f"{where}: {problems}") from None
        except SimulatorError as err:
            raise ScriptError(f"{where}: {err}") from None
        actions.append(action)
    return Script.of(actions)


def load_script(path: str | Path, *, line: Sequence[MachineSpec] = DEFAULT_LINE) -> Script:
    """Read and validate a script file; raise ScriptError naming the file, line and field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ScriptError(f"{source}: cannot read the script: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScriptError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    return parse_script(data, source=source, lines=_item_lines(root), line=line)


def _item_lines(root: yaml.Node | None) -> dict[int, int]:
    """Line number of each item under ``actions``, for error messages."""
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key, value in root.value:
        if getattr(key, "value", None) == "actions" and isinstance(value, yaml.SequenceNode):
            return {i: item.start_mark.line + 1 for i, item in enumerate(value.value)}
    return {}
