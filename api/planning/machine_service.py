"""What machine states mean for OEE, and per-machine settings; every write audited.

Loss classes come in three layers, each overriding the one before: the built-in defaults
(api.oee.calc.DEFAULT_STATE_CLASSES), the global rows (asset_id NULL) and the machine's
own rows — the precedence api/oee/service.py applies.

A line's OEE is that of its one machine flagged is_line_output, so flagging a machine
clears the flag on the other machines of its line in the same transaction (each change
audited). The line's row is locked first, so two concurrent changes cannot leave two.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.auth.keys import ApiKey
from api.errors import NotFound
from api.oee.calc import DEFAULT_STATE_CLASSES
from api.planning import repository as repo
from api.planning.common import asset_at, record
from api.planning.schemas import (
    MachineSettingsChanged,
    MachineSettingsPublic,
    MachineSettingsSet,
    Source,
    StateClassEntry,
    StateClassesPublic,
    StateClassPublic,
    StateClassSet,
)

MACHINE = ("machine",)


def state_classes(session: Session, asset_id: int | None) -> StateClassesPublic:
    """The effective state → loss class mapping for every machine, or for one machine."""
    if asset_id is not None:
        asset_at(session, asset_id, levels=MACHINE, field="asset_id")
    entries = {
        state: StateClassEntry(state=state, loss_class=cls.value, source="default", id=None)
        for state, cls in DEFAULT_STATE_CLASSES.items()
    }
    for row in repo.class_rows(session, asset_id):  # globals first, then the machine's
        source: Source = "global" if row["asset_id"] is None else "asset"
        entries[row["state"]] = StateClassEntry(
            state=row["state"], loss_class=row["loss_class"], source=source, id=row["id"]
        )
    return StateClassesPublic(asset_id=asset_id, entries=sorted(entries.values(), key=_state))


def _state(entry: StateClassEntry) -> str:
    return entry.state


def put_state_class(session: Session, data: StateClassSet, *, actor: ApiKey) -> StateClassPublic:
    """Set what a state means globally or for one machine (replacing that row); audited."""
    if data.asset_id is not None:
        asset_at(session, data.asset_id, levels=MACHINE, field="asset_id", lock=True)
    found = repo.class_by_key(session, asset_id=data.asset_id, state=data.state)
    before = None if found is None else StateClassPublic(**found)
    row = repo.put_class(
        session, asset_id=data.asset_id, state=data.state, loss_class=data.loss_class
    )
    after = StateClassPublic(**row)
    record(session, actor=actor, action="create" if before is None else "update",
           entity="state_loss_class", entity_id=after.id, before=before, after=after)  # fmt: skip
    session.commit()
    return after


def delete_state_class(session: Session, class_id: int, *, actor: ApiKey) -> None:
    """Remove a mapping row (the layer below applies again); audited."""
    row = repo.get_class(session, class_id, lock=True)
    if row is None:
        raise NotFound(f"there is no state class {class_id}", field="class_id")
    repo.delete_class(session, class_id)
    record(session, actor=actor, action="delete", entity="state_loss_class", entity_id=class_id,
           before=StateClassPublic(**row))  # fmt: skip
    session.commit()


def machine_settings(session: Session, asset_id: int) -> MachineSettingsPublic:
    """A machine's settings (the defaults when none are stored)."""
    machine = asset_at(session, asset_id, levels=MACHINE, field="asset_id")
    return _public(repo.get_settings(session, asset_id), path=machine["path"], asset_id=asset_id)


def put_machine_settings(
    session: Session, asset_id: int, data: MachineSettingsSet, *, actor: ApiKey
) -> MachineSettingsChanged:
    """Replace a machine's settings; flagging it the line output unflags the others."""
    machine = asset_at(session, asset_id, levels=MACHINE, field="asset_id")
    line_id = machine["parent_id"]  # None only for a machine inserted around the API
    if line_id is not None:
        repo.asset(session, line_id, lock=True)  # serializes changes per line
    found = repo.get_settings(session, asset_id, lock=True)
    before = None if found is None else _public(found, path=machine["path"], asset_id=asset_id)
    cleared = []
    if data.is_line_output and line_id is not None:
        for other in repo.other_outputs(session, line_id=line_id, asset_id=asset_id):
            _clear_output(session, other, actor=actor)
            cleared.append(int(other["asset_id"]))
    repo.put_settings(
        session,
        asset_id=asset_id,
        micro_stop_s=data.micro_stop_s,
        is_line_output=data.is_line_output,
    )
    after = MachineSettingsPublic(
        asset_id=asset_id, path=machine["path"], stored=True, **data.model_dump()
    )
    record(session, actor=actor, action="create" if before is None else "update",
           entity="machine_settings", entity_id=asset_id, before=before, after=after)  # fmt: skip
    session.commit()
    return MachineSettingsChanged(**after.model_dump(), cleared_line_output=cleared)


def _clear_output(session: Session, other: dict[str, Any], *, actor: ApiKey) -> None:
    before = _public(other, path=other["path"], asset_id=int(other["asset_id"]))
    repo.clear_output(session, before.asset_id)
    after = before.model_copy(update={"is_line_output": False})
    record(session, actor=actor, action="update", entity="machine_settings",
           entity_id=before.asset_id, before=before, after=after)  # fmt: skip


def _public(row: dict[str, Any] | None, *, path: str, asset_id: int) -> MachineSettingsPublic:
    if row is None:
        return MachineSettingsPublic(
            asset_id=asset_id, path=path, micro_stop_s=0.0, is_line_output=False, stored=False
        )
    return MachineSettingsPublic(
        asset_id=asset_id,
        path=path,
        micro_stop_s=float(row["micro_stop_s"]),
        is_line_output=bool(row["is_line_output"]),
        stored=True,
    )
