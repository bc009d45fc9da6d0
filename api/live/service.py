"""The live view: current state, product and gateways, optionally of one site."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import Invalid, NotFound
from api.live import repository as repo
from api.live.schemas import GatewayLive, LivePublic, MachineLive, MachineState


def live(session: Session, *, site_id: int | None) -> LivePublic:
    """Every machine's current state and product and the gateways (of one site)."""
    site_path = None
    if site_id is not None:
        row = repo.site(session, site_id)
        if row is None:
            raise NotFound(f"there is no asset {site_id}", field="site_id")
        if row["level"] != "site":
            raise Invalid(f"asset {site_id} is a {row['level']}, not a site", field="site_id")
        site_path = str(row["path"])
    return LivePublic(
        as_of=repo.now(session),
        machines=[_machine(r) for r in repo.machines(session, site_path=site_path)],
        gateways=[GatewayLive(**r) for r in repo.gateways(session, site_path=site_path)],
    )


def _machine(row: dict[str, Any]) -> MachineLive:
    current = None
    if row["since"] is not None and row["end_time"] is None:
        current = MachineState(
            state=row["state"], reason=row["reason"], code=row["code"], since=row["since"]
        )
    keep = ("asset_id", "path", "display_name", "product", "product_time")
    return MachineLive(**{k: row[k] for k in keep}, current=current)
