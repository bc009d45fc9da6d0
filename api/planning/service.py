"""Products and their ideal cycle times, and the downtime reason tree; every write audited.

Counts name their product by code: the ideal cycle time of a count is the product's on
that machine (product_cycle_times), else the product's line default (products).
Downtime reasons are keyed by the stop code machines report (state_intervals.code);
operators' assignments (stop_reasons) refer to them, so a code in use cannot be deleted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.auth.keys import ApiKey
from api.errors import Conflict, Invalid, NotFound
from api.planning import repository as repo
from api.planning.common import asset_at, changes, record, write
from api.planning.schemas import (
    CycleTimePublic,
    ProductCreate,
    ProductDetail,
    ProductPublic,
    ProductUpdate,
    ReasonCategory,
    ReasonCreate,
    ReasonLeaf,
    ReasonPublic,
    ReasonUpdate,
)

# Words under /downtime-reasons/ that are routes, not codes.
RESERVED_CODES = frozenset({"tree"})


# --- products --------------------------------------------------------------------------


def list_products(session: Session) -> list[ProductPublic]:
    """Every product, by code."""
    return [ProductPublic(**row) for row in repo.list_products(session)]


def get_product(session: Session, product_id: int) -> ProductDetail:
    """A product with its per-machine cycle times."""
    row = _product(session, product_id)
    times = [CycleTimePublic(**t) for t in repo.cycle_times(session, product_id)]
    return ProductDetail(**row, cycle_times=times)


def create_product(session: Session, data: ProductCreate, *, actor: ApiKey) -> ProductPublic:
    """Create a product (409 when its code exists); audited."""
    row = write(
        session,
        lambda: repo.insert_product(session, data.model_dump()),
        unique=_duplicate_code(data.code),
    )
    product = ProductPublic(**row)
    record(session, actor=actor, action="create", entity="product", entity_id=product.id,
           after=product)  # fmt: skip
    session.commit()
    return product


def update_product(
    session: Session, product_id: int, data: ProductUpdate, *, actor: ApiKey
) -> ProductPublic:
    """Change a product's code, name or default cycle time; audited."""
    before = ProductPublic(**_product(session, product_id, lock=True))
    values = changes(data, nullable=("name", "ideal_cycle_s"))
    if not values:
        return before
    row = write(
        session,
        lambda: repo.update_product(session, product_id, values),
        unique=_duplicate_code(values.get("code", "")),
    )
    after = ProductPublic(**row)
    record(session, actor=actor, action="update", entity="product", entity_id=product_id,
           before=before, after=after)  # fmt: skip
    session.commit()
    return after


def delete_product(session: Session, product_id: int, *, actor: ApiKey) -> None:
    """Delete a product and its per-machine cycle times; audited."""
    before = get_product(session, product_id)
    repo.delete_product(session, product_id)
    record(session, actor=actor, action="delete", entity="product", entity_id=product_id,
           before=before)  # fmt: skip
    session.commit()


def cycle_times(session: Session, product_id: int) -> list[CycleTimePublic]:
    """A product's per-machine cycle times."""
    _product(session, product_id)
    return [CycleTimePublic(**t) for t in repo.cycle_times(session, product_id)]


def put_cycle_time(
    session: Session, *, product_id: int, asset_id: int, seconds: float, actor: ApiKey
) -> CycleTimePublic:
    """Set a product's ideal cycle time on one machine; audited."""
    _product(session, product_id, lock=True)
    machine = asset_at(session, asset_id, levels=("machine",), field="asset_id", lock=True)
    found = repo.get_cycle_time(session, product_id=product_id, asset_id=asset_id)
    before = None if found is None else CycleTimePublic(**found)
    repo.put_cycle_time(session, product_id=product_id, asset_id=asset_id, seconds=seconds)
    after = CycleTimePublic(
        product_id=product_id, asset_id=asset_id, asset_path=machine["path"], ideal_cycle_s=seconds
    )
    record(session, actor=actor, action="create" if before is None else "update",
           entity="product_cycle_time", entity_id=f"{product_id}/{asset_id}",
           before=before, after=after)  # fmt: skip
    session.commit()
    return after


def delete_cycle_time(session: Session, *, product_id: int, asset_id: int, actor: ApiKey) -> None:
    """Remove a machine's own cycle time (the product default applies again); audited."""
    _product(session, product_id)
    found = repo.get_cycle_time(session, product_id=product_id, asset_id=asset_id)
    if found is None:
        raise NotFound(
            f"product {product_id} has no cycle time of its own on asset {asset_id}",
            field="asset_id",
        )
    repo.delete_cycle_time(session, product_id=product_id, asset_id=asset_id)
    record(session, actor=actor, action="delete", entity="product_cycle_time",
           entity_id=f"{product_id}/{asset_id}", before=CycleTimePublic(**found))  # fmt: skip
    session.commit()


def _product(session: Session, product_id: int, *, lock: bool = False) -> dict[str, Any]:
    row = repo.get_product(session, product_id, lock=lock)
    if row is None:
        raise NotFound(f"there is no product {product_id}", field="product_id")
    return row


def _duplicate_code(code: str) -> Conflict:
    return Conflict(f"a product with the code {code!r} exists already", field="code")


# --- downtime reasons ------------------------------------------------------------------


def list_reasons(
    session: Session, *, category: str | None, planned: bool | None
) -> list[ReasonPublic]:
    """Reasons by category, reason and code, optionally filtered."""
    return [
        ReasonPublic(**r) for r in repo.list_reasons(session, category=category, planned=planned)
    ]


def reason_tree(session: Session) -> list[ReasonCategory]:
    """Categories (by name) with their reasons nested, as an operator picks them."""
    tree: dict[str, list[ReasonLeaf]] = {}
    for row in repo.list_reasons(session, category=None, planned=None):
        tree.setdefault(row["category"], []).append(ReasonLeaf(**row))
    out = []
    for category, leaves in tree.items():
        kinds = {leaf.planned for leaf in leaves}
        planned = next(iter(kinds)) if len(kinds) == 1 else None
        out.append(ReasonCategory(category=category, planned=planned, reasons=leaves))
    return out


def get_reason(session: Session, code: str) -> ReasonPublic:
    """One reason."""
    return ReasonPublic(**_reason(session, code))


def create_reason(session: Session, data: ReasonCreate, *, actor: ApiKey) -> ReasonPublic:
    """Create a reason (409 when its code exists); audited."""
    _check_code(data.code)
    row = write(
        session,
        lambda: repo.insert_reason(session, data.model_dump()),
        unique=_duplicate_reason(data.code),
    )
    after = ReasonPublic(**row)
    record(session, actor=actor, action="create", entity="downtime_reason", entity_id=data.code,
           after=after)  # fmt: skip
    session.commit()
    return after


def update_reason(
    session: Session, code: str, data: ReasonUpdate, *, actor: ApiKey
) -> ReasonPublic:
    """Change a reason's text, category, planned flag or code; audited."""
    before = ReasonPublic(**_reason(session, code, lock=True))
    values = changes(data)
    if "code" in values:
        _check_code(values["code"])
    if not values:
        return before
    row = write(
        session,
        lambda: repo.update_reason(session, code, values),
        unique=_duplicate_reason(values.get("code", "")),
    )
    after = ReasonPublic(**row)
    record(session, actor=actor, action="update", entity="downtime_reason", entity_id=code,
           before=before, after=after)  # fmt: skip
    session.commit()
    return after


def delete_reason(session: Session, code: str, *, actor: ApiKey) -> None:
    """Delete a reason no operator assignment uses (409 naming how many do); audited."""
    before = ReasonPublic(**_reason(session, code, lock=True))
    uses = repo.reason_uses(session, code)
    if uses:
        raise Conflict(_in_use(code, uses), field="code")
    # The row lock makes a concurrent assignment wait for this delete (and then fail).
    in_use = Conflict(f"the downtime reason {code!r} is assigned to stops", field="code")
    write(session, lambda: repo.delete_reason(session, code), foreign_key=in_use)
    record(session, actor=actor, action="delete", entity="downtime_reason", entity_id=code,
           before=before)  # fmt: skip
    session.commit()


def _duplicate_reason(code: str) -> Conflict:
    return Conflict(f"a downtime reason with the code {code!r} exists already", field="code")


def _in_use(code: str, uses: int) -> str:
    stops = "stop" if uses == 1 else "stops"
    return (
        f"the downtime reason {code!r} is assigned to {uses} {stops} by operators;"
        " reassign them (or change this reason instead of deleting it)"
    )


def _reason(session: Session, code: str, *, lock: bool = False) -> dict[str, Any]:
    row = repo.get_reason(session, code, lock=lock)
    if row is None:
        raise NotFound(f"there is no downtime reason {code!r}", field="code")
    return row


def _check_code(code: str) -> None:
    if code.strip().lower() in RESERVED_CODES:
        raise Invalid(f"{code!r} is reserved (it names a route); choose another", field="code")
