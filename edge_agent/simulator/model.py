"""The simulated packaging line: a pure, seeded model advanced one tick at a time.

Four machines in a row (filler → capper → labeler → packer). Each has a PLC-style state
code, monotonic part counters, analog values with seeded noise, and the product being
made. Nothing here does I/O or reads a clock: simulated time is ``start + n * tick``, and
two models built with the same seed, tick and script follow the same trajectory.

State codes and the machines are in ``line.py``.

Between two machines sits an accumulation buffer (``buffer_size`` parts, half full at
the start). Each tick parts flow upstream first: a running machine takes parts from the
buffer before it, paced by how full that buffer is (below half full it slows down, to
no less than half speed), and puts them, less its rejects, into the buffer after it. A
machine whose input buffer is empty is starved; one whose output buffer is full is
blocked. So a stopped filler starves the downstream machines one after the other once
their buffers run dry, and a stopped packer blocks the upstream ones as theirs fill up.
The line runs at the pace of its slowest machine (the filler), as real lines do. A
machine's own state (fault, planned stop, idle) wins over starved and blocked.

A tick (``step``): parts flow over the interval that ends, using the states of its start;
time advances; actions due at the new time run, timed states expire, random stops may
begin; analogs update. So a state set at time t holds from t on, and counters at time t
include every part made up to t.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from edge_agent.simulator.line import (
    DEFAULT_LINE,
    MAX_STRING,
    PRODUCTS,
    Code,
    MachineSpec,
    SimulatorError,
    is_fault,
)

if TYPE_CHECKING:
    from edge_agent.simulator.script import Script

_EPS: Final = 1e-9
_GOLDEN: Final = (math.sqrt(5) - 1) / 2
AMBIENT_C: Final = 21.0
CounterName = Literal["total", "reject"]
COUNTERS: Final[tuple[CounterName, ...]] = ("total", "reject")


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """One machine as a PLC would show it at one tick."""

    name: str
    index: int
    state: int
    running: bool
    faulted: bool
    total: int
    reject: int
    speed: float  # parts/min, 0 when not running
    temperature: float  # degC
    pressure: float  # bar
    product: str
    order: str
    ts: float  # simulated time, seconds since the Unix epoch
    rejects: tuple[tuple[str, int], ...] = ()  # reject-reason counters, (reason, value)

    def reject_counter(self, reason: str) -> int:
        """The value of one reject-reason counter."""
        return dict(self.rejects)[reason]


@dataclass(frozen=True, slots=True)
class LineSnapshot:
    """The whole line at tick ``n`` (elapsed ``t`` seconds, timestamp ``ts``)."""

    n: int
    t: float
    ts: float
    machines: tuple[MachineSnapshot, ...]

    def __getitem__(self, name: str) -> MachineSnapshot:
        for m in self.machines:
            if m.name == name:
                return m
        raise SimulatorError(f"no machine {name!r} on the line")

    def __iter__(self) -> Iterator[MachineSnapshot]:
        return iter(self.machines)


@dataclass(slots=True)
class _Machine:
    """The mutable state behind a MachineSnapshot."""

    spec: MachineSpec
    index: int
    rng: random.Random
    own: int = Code.RUNNING  # what the machine itself is doing; running unless told otherwise
    own_until: float | None = None  # elapsed seconds when ``own`` returns to running
    starved: bool = False  # during the last tick: running, but its input buffer was empty
    blocked: bool = False  # during the last tick: running, but its output buffer was full
    flow: float = 0.0  # parts it took in during the last tick
    total: int = 0
    reject: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # reject-reason counters
    reason_u: float = 0.0  # the frozen line's reason sequence (see _attribute)
    part_acc: float = 0.0
    reject_acc: float = 0.0
    speed: float = 0.0  # speed while running (noisy)
    temperature: float = 0.0
    pressure: float = 0.0
    product: str = PRODUCTS[0]
    order: str = "ORD-240001"

    @property
    def state(self) -> int:
        if self.own != Code.RUNNING:
            return self.own
        if self.starved:
            return Code.STARVED
        return Code.BLOCKED if self.blocked else Code.RUNNING


class LineModel:
    """The packaging line: ``step()`` advances one tick; the rest is a scriptable API.

    ``seed`` fixes every random draw; ``tick`` is the simulated seconds per step;
    ``start`` (Unix seconds) only stamps snapshots; ``script`` holds timed actions;
    ``counters`` sets initial PLC counters, e.g. ``{"filler.total": 65500}``;
    ``frozen`` starts without randomness (no random stops, no noise).
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        tick: float = 0.5,
        start: float = 0.0,
        script: Script | None = None,
        machines: Sequence[MachineSpec] = DEFAULT_LINE,
        counters: Mapping[str, int] | None = None,
        buffer_size: float = 40.0,
        frozen: bool = False,
    ) -> None:
        if not tick > 0:
            raise SimulatorError(f"tick must be a positive number of seconds, not {tick!r}")
        if len({m.name for m in machines}) != len(machines) or not machines:
            raise SimulatorError("a line needs at least one machine and unique machine names")
        if not buffer_size > 0:
            raise SimulatorError(
                f"buffer_size must be a positive number of parts, not {buffer_size!r}"
            )
        self.seed = seed
        self.tick = float(tick)
        self.start = float(start)
        self.buffer_size = float(buffer_size)
        self._buffers = [self.buffer_size / 2] * (len(machines) - 1)
        self.frozen = frozen
        self._n = 0
        self._line_rng = random.Random(f"{seed}:line")
        self._machines = [
            _Machine(spec, i, random.Random(f"{seed}:{spec.name}"))
            for i, spec in enumerate(machines)
        ]
        # Reasons draw from their own streams, so adding them changed no other trajectory.
        self._reason_rngs = {
            spec.name: random.Random(f"{seed}:{spec.name}:reasons") for spec in machines
        }
        for m in self._machines:
            m.speed, m.temperature, m.pressure = m.spec.rate, m.spec.temperature, m.spec.pressure
            m.reasons = dict.fromkeys(m.spec.reject_reasons, 0)
        self._order_no = 240001
        self._actions = list(script.actions) if script else []
        self._next_action = 0
        for name, value in (counters or {}).items():
            machine, _, counter = name.partition(".")
            if counter.startswith("reject."):
                self.set_reason_counter(machine, counter.removeprefix("reject."), value)
            else:
                self.set_counter(machine, _counter_name(counter), value)
        self._apply_due_actions()

    # ------------------------------------------------------------ time

    @property
    def n(self) -> int:
        """Ticks taken so far."""
        return self._n

    @property
    def t(self) -> float:
        """Elapsed simulated seconds (``n * tick``)."""
        return self._n * self.tick

    @property
    def now(self) -> float:
        """Simulated time in seconds since the Unix epoch: ``start + n * tick``."""
        return self.start + self.t

    @property
    def machine_names(self) -> tuple[str, ...]:
        return tuple(m.spec.name for m in self._machines)

    @property
    def specs(self) -> tuple[MachineSpec, ...]:
        return tuple(m.spec for m in self._machines)

    @property
    def buffers(self) -> tuple[float, ...]:
        """Parts waiting between machine i and i+1."""
        return tuple(self._buffers)

    def shift_clock(self, seconds: float) -> None:
        """Move timestamps (not the trajectory) by ``seconds``: for a runner that fell behind."""
        self.start += seconds

    def step(self) -> LineSnapshot:
        """Advance one tick and return the line as it is at the new time."""
        self._flow()
        self._n += 1
        self._apply_due_actions()
        self._expire()
        if not self.frozen:
            self._random_events()
        self._update_analogs()
        return self.snapshot()

    def run(self, ticks: int) -> LineSnapshot:
        """Take ``ticks`` steps; return the last snapshot."""
        for _ in range(ticks):
            self.step()
        return self.snapshot()

    # ------------------------------------------------------------ reading

    def snapshot(self) -> LineSnapshot:
        """The line as it is now."""
        ts = self.now
        return LineSnapshot(self._n, self.t, ts, tuple(self._snap(m, ts) for m in self._machines))

    def machine(self, name: str) -> MachineSnapshot:
        """One machine as it is now."""
        return self._snap(self._get(name), self.now)

    def _snap(self, m: _Machine, ts: float) -> MachineSnapshot:
        state = int(m.state)
        running = state == Code.RUNNING
        # the speed it ran at during the last tick, or its set speed if it just started
        speed = m.flow * 60.0 / self.tick if m.flow > 0 else m.speed
        return MachineSnapshot(
            name=m.spec.name,
            index=m.index,
            state=state,
            running=running,
            faulted=is_fault(state),
            total=m.total,
            reject=m.reject,
            speed=round(speed, 3) if running else 0.0,
            temperature=round(m.temperature, 3),
            pressure=round(m.pressure, 3),
            product=m.product,
            order=m.order,
            ts=ts,
            rejects=tuple(m.reasons.items()),
        )

    # ------------------------------------------------------------ the API tests and scripts use

    def set_state(self, machine: str | None, code: int, *, duration: float | None = None) -> None:
        """Put a machine (None: all) into state ``code`` for ``duration`` s, or until changed.

        Code 1 (running) ends whatever the machine was doing. Starved and blocked set here
        are forced; otherwise the line derives them from the neighbours.
        """
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 65535:
            raise SimulatorError(f"state code must be an integer 0..65535, not {code!r}")
        if duration is not None and not duration > 0:
            raise SimulatorError(f"duration must be a positive number of seconds, not {duration!r}")
        for m in self._select(machine):
            m.own = code
            m.own_until = None if code == Code.RUNNING or duration is None else self.t + duration

    def set_counter(self, machine: str, counter: CounterName, value: int) -> None:
        """Set a PLC counter to a raw value (e.g. near rollover)."""
        m = self._get(machine)
        limit = 2 ** _bits(m.spec, counter)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
            raise SimulatorError(
                f"{machine}.{counter} is a {_bits(m.spec, counter)}-bit counter:"
                f" value must be 0..{limit - 1}, not {value!r}"
            )
        setattr(m, _counter_name(counter), value)

    def set_reason_counter(self, machine: str, reason: str, value: int) -> None:
        """Set a reject-reason counter to a raw value (e.g. near rollover)."""
        m = self._get(machine)
        if reason not in m.reasons:
            raise SimulatorError(
                f"{machine} has no reject reason {reason!r}:"
                f" choose one of {', '.join(m.reasons) or '(none)'}"
            )
        limit = 2**m.spec.reason_bits
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
            raise SimulatorError(
                f"{machine}.reject.{reason} is a {m.spec.reason_bits}-bit counter:"
                f" value must be 0..{limit - 1}, not {value!r}"
            )
        m.reasons[reason] = value

    def reset_counter(self, machine: str | None, counter: CounterName | None = None) -> None:
        """Clear a counter (None: both) as a PLC does at shift change; None machine: all.

        Clearing the reject counter clears the reject-reason counters with it."""
        names = COUNTERS if counter is None else (_counter_name(counter),)
        for m in self._select(machine):
            for name in names:
                setattr(m, name, 0)
            if "reject" in names:
                m.reasons = dict.fromkeys(m.reasons, 0)

    def set_product(
        self, product: str, *, order: str | None = None, machine: str | None = None
    ) -> None:
        """Switch the product code (and order number) of one machine or the whole line."""
        _check_string("product", product)
        if order is not None:
            _check_string("order", order)
        for m in self._select(machine):
            m.product = product
            if order is not None:
                m.order = order

    def changeover(
        self, product: str, *, order: str | None = None, duration: float = 300.0
    ) -> None:
        """Changeover the whole line to ``product``: planned stop for ``duration`` s."""
        if order is None:
            self._order_no += 1
            order = f"ORD-{self._order_no}"
        self.set_product(product, order=order)
        self.set_state(None, Code.CHANGEOVER, duration=duration)

    def freeze(self) -> None:
        """Stop all randomness: no random stops, no noise, rejects at exactly the reject ratio."""
        self.frozen = True

    def unfreeze(self) -> None:
        """Resume the seeded randomness."""
        self.frozen = False

    # ------------------------------------------------------------ internals

    def _get(self, name: str) -> _Machine:
        for m in self._machines:
            if m.spec.name == name:
                return m
        raise SimulatorError(
            f"no machine {name!r} on the line: choose one of {', '.join(self.machine_names)}"
        )

    def _select(self, name: str | None) -> Iterable[_Machine]:
        return list(self._machines) if name in (None, "all") else [self._get(str(name))]

    def _apply_due_actions(self) -> None:
        while self._next_action < len(self._actions):
            action = self._actions[self._next_action]
            if action.at > self.t + _EPS:
                return
            self._next_action += 1
            action.apply(self)

    def _expire(self) -> None:
        for m in self._machines:
            if m.own_until is not None and self.t >= m.own_until - _EPS:
                m.own, m.own_until = Code.RUNNING, None

    def _flow(self) -> None:
        """Move parts along the line over the tick that is ending, upstream first."""
        last = len(self._machines) - 1
        for i, m in enumerate(self._machines):
            m.starved = m.blocked = False
            m.flow = 0.0
            if m.own != Code.RUNNING:
                continue
            want = m.speed / 60.0 * self.tick
            if i > 0:  # pace to the infeed, and take no more than is there
                level = self._buffers[i - 1]
                want = min(want * min(1.0, max(0.5, 2 * level / self.buffer_size)), level)
            if i < last:
                want = min(want, self.buffer_size - self._buffers[i])
            if want <= _EPS:
                m.starved = i > 0 and self._buffers[i - 1] <= _EPS
                m.blocked = not m.starved
                continue
            m.flow = want
            if i > 0:
                self._buffers[i - 1] = max(0.0, self._buffers[i - 1] - want)
            if i < last:  # rejects leave the line here
                self._buffers[i] += want * (1.0 - m.spec.reject_ratio)
            self._count(m, want)

    def _count(self, m: _Machine, parts: float) -> None:
        """Add ``parts`` (fractional) to the machine's integer PLC counters."""
        m.part_acc += parts
        made = int(m.part_acc + _EPS)
        m.part_acc -= made
        if self.frozen:
            m.reject_acc += made * m.spec.reject_ratio
            rejected = int(m.reject_acc + _EPS)
            m.reject_acc -= rejected
        else:
            rejected = sum(m.rng.random() < m.spec.reject_ratio for _ in range(made))
        m.total = (m.total + made) % 2**m.spec.total_bits
        m.reject = (m.reject + rejected) % 2**32
        if m.reasons:
            self._attribute(m, rejected)

    def _attribute(self, m: _Machine, rejected: int) -> None:
        """Count each rejected part against at most one reason, by the reasons' shares.

        Random: a draw per part from the machine's reason stream. Frozen: the golden-ratio
        sequence instead, evenly spread and with no randomness.
        """
        rng = self._reason_rngs[m.spec.name]
        limit = 2**m.spec.reason_bits
        for _ in range(rejected):
            if self.frozen:
                m.reason_u = (m.reason_u + _GOLDEN) % 1.0
                u = m.reason_u
            else:
                u = rng.random()
            for reason, share in m.spec.reject_reasons.items():
                if u < share:
                    m.reasons[reason] = (m.reasons[reason] + 1) % limit
                    break
                u -= share

    def _random_events(self) -> None:
        for m in self._machines:
            fault, idle = m.rng.random(), m.rng.random()  # always drawn: streams stay aligned
            if m.own != Code.RUNNING:
                continue
            if fault < self.tick / m.spec.mtbf:
                codes, weights = zip(*m.spec.faults.items(), strict=True)
                m.own = m.rng.choices(codes, weights)[0]
                m.own_until = self.t + m.rng.uniform(*m.spec.repair)
            elif idle < self.tick / 3600.0:  # an operator away, about once an hour
                m.own, m.own_until = Code.IDLE, self.t + m.rng.uniform(20.0, 120.0)
        # a changeover about every four hours of simulated time
        if self._line_rng.random() < self.tick / 14400.0 and all(
            m.own == Code.RUNNING for m in self._machines
        ):
            current = self._machines[0].product
            following = (
                PRODUCTS[(PRODUCTS.index(current) + 1) % len(PRODUCTS)]
                if (current in PRODUCTS)
                else PRODUCTS[0]
            )
            self.changeover(following, duration=self._line_rng.uniform(240.0, 900.0))

    def _update_analogs(self) -> None:
        temp_lag = 1.0 - math.exp(-self.tick / 60.0)
        air_lag = 1.0 - math.exp(-self.tick / 4.0)
        for m in self._machines:
            spec, state = m.spec, m.state
            temp_target = (
                spec.temperature
                if state == Code.RUNNING
                else (AMBIENT_C + 0.3 * (spec.temperature - AMBIENT_C))
            )
            if m.own == Code.OVERTEMPERATURE:
                temp_target = spec.temperature + 15.0
            air_target = spec.pressure * (0.65 if m.own == Code.LOW_AIR_PRESSURE else 1.0)
            m.temperature += (temp_target - m.temperature) * temp_lag
            m.pressure += (air_target - m.pressure) * air_lag
            if self.frozen:
                m.speed = spec.rate
                continue
            m.temperature += m.rng.gauss(0.0, 0.05)
            m.pressure += m.rng.gauss(0.0, 0.01)
            m.speed = spec.rate * (1.0 + m.rng.gauss(0.0, 0.01))


def _bits(spec: MachineSpec, counter: str) -> int:
    return spec.total_bits if counter == "total" else 32


def _counter_name(counter: str) -> CounterName:
    if counter not in COUNTERS:
        raise SimulatorError(f"no counter {counter!r}: choose total or reject")
    return "total" if counter == "total" else "reject"


def _check_string(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_STRING or not value.isascii():
        raise SimulatorError(
            f"{what} must be 1..{MAX_STRING} ASCII characters (8 Modbus registers), not {value!r}"
        )
