"""All SQL of products, cycle times, downtime reasons, state loss classes and machine
settings (the calendar's is in calendar_repository.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]
_FOR_UPDATE = " FOR UPDATE"


def rows(session: Session, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
    """The result rows of ``sql`` as dicts."""
    return [dict(r) for r in session.execute(text(sql), params or {}).mappings()]


def first(session: Session, sql: str, params: dict[str, Any] | None = None) -> Row | None:
    """The first result row of ``sql``, or None."""
    found = rows(session, sql, params)
    return found[0] if found else None


def asset(session: Session, asset_id: int, *, lock: bool = False) -> Row | None:
    """An asset's id, level, path, parent and time zone (``lock``: FOR UPDATE)."""
    return first(
        session,
        "SELECT id, level, path, parent_id, timezone FROM assets WHERE id = :id"
        + (_FOR_UPDATE if lock else ""),
        {"id": asset_id},
    )


# --- products --------------------------------------------------------------------------

_PRODUCT = "id, code, name, ideal_cycle_s"


def list_products(session: Session) -> list[Row]:
    """Every product, by code."""
    return rows(session, f"SELECT {_PRODUCT} FROM products ORDER BY code")


def get_product(session: Session, product_id: int, *, lock: bool = False) -> Row | None:
    """One product."""
    return first(
        session,
        f"SELECT {_PRODUCT} FROM products WHERE id = :id" + (_FOR_UPDATE if lock else ""),
        {"id": product_id},
    )


def insert_product(session: Session, values: Row) -> Row:
    """Insert a product; returns it."""
    return rows(
        session,
        "INSERT INTO products (code, name, ideal_cycle_s) VALUES (:code, :name, :ideal_cycle_s)"
        f" RETURNING {_PRODUCT}",
        values,
    )[0]


def update_product(session: Session, product_id: int, values: Row) -> Row:
    """Set the given columns of a product (names from the schema); returns it."""
    sets = ", ".join(f"{column} = :{column}" for column in values)
    return rows(
        session,
        f"UPDATE products SET {sets} WHERE id = :id RETURNING {_PRODUCT}",
        {**values, "id": product_id},
    )[0]


def delete_product(session: Session, product_id: int) -> None:
    """Delete a product (its cycle times go with it)."""
    session.execute(text("DELETE FROM products WHERE id = :id"), {"id": product_id})


_CYCLE = (
    "SELECT c.product_id, c.asset_id, a.path AS asset_path, c.ideal_cycle_s"
    " FROM product_cycle_times c JOIN assets a ON a.id = c.asset_id"
)


def cycle_times(session: Session, product_id: int) -> list[Row]:
    """A product's per-machine cycle times, by machine path."""
    return rows(session, f"{_CYCLE} WHERE c.product_id = :p ORDER BY a.path", {"p": product_id})


def get_cycle_time(session: Session, *, product_id: int, asset_id: int) -> Row | None:
    """One product's cycle time on one machine."""
    return first(
        session,
        f"{_CYCLE} WHERE c.product_id = :p AND c.asset_id = :a FOR UPDATE OF c",
        {"p": product_id, "a": asset_id},
    )


def put_cycle_time(session: Session, *, product_id: int, asset_id: int, seconds: float) -> None:
    """Insert or replace a product's cycle time on a machine."""
    session.execute(
        text(
            "INSERT INTO product_cycle_times (product_id, asset_id, ideal_cycle_s)"
            " VALUES (:p, :a, :s) ON CONFLICT (product_id, asset_id)"
            " DO UPDATE SET ideal_cycle_s = excluded.ideal_cycle_s"
        ),
        {"p": product_id, "a": asset_id, "s": seconds},
    )


def delete_cycle_time(session: Session, *, product_id: int, asset_id: int) -> None:
    """Delete a product's cycle time on a machine."""
    session.execute(
        text("DELETE FROM product_cycle_times WHERE product_id = :p AND asset_id = :a"),
        {"p": product_id, "a": asset_id},
    )


# --- downtime reasons ------------------------------------------------------------------

_REASON = "code, reason, category, planned"


def list_reasons(session: Session, *, category: str | None, planned: bool | None) -> list[Row]:
    """Reasons by category and code, optionally of one category and/or planned or not."""
    return rows(
        session,
        f"SELECT {_REASON} FROM downtime_reasons"
        " WHERE (CAST(:category AS text) IS NULL OR category = :category)"
        " AND (CAST(:planned AS boolean) IS NULL OR planned = :planned)"
        " ORDER BY category, reason, code",
        {"category": category, "planned": planned},
    )


def get_reason(session: Session, code: str, *, lock: bool = False) -> Row | None:
    """One reason by code."""
    return first(
        session,
        f"SELECT {_REASON} FROM downtime_reasons WHERE code = :code"
        + (_FOR_UPDATE if lock else ""),
        {"code": code},
    )


def insert_reason(session: Session, values: Row) -> Row:
    """Insert a reason; returns it."""
    return rows(
        session,
        "INSERT INTO downtime_reasons (code, reason, category, planned)"
        f" VALUES (:code, :reason, :category, :planned) RETURNING {_REASON}",
        values,
    )[0]


def update_reason(session: Session, code: str, values: Row) -> Row:
    """Set the given columns of a reason (a new code cascades to stop_reasons)."""
    sets = ", ".join(f"{column} = :new_{column}" for column in values)
    params = {f"new_{column}": value for column, value in values.items()}
    return rows(
        session,
        f"UPDATE downtime_reasons SET {sets} WHERE code = :code RETURNING {_REASON}",
        {**params, "code": code},
    )[0]


def reason_uses(session: Session, code: str) -> int:
    """How many operator assignments (stop_reasons) use a code."""
    found = first(session, "SELECT count(*) AS n FROM stop_reasons WHERE code = :c", {"c": code})
    return int(found["n"]) if found else 0


def delete_reason(session: Session, code: str) -> None:
    """Delete a reason."""
    session.execute(text("DELETE FROM downtime_reasons WHERE code = :c"), {"c": code})


# --- state loss classes ----------------------------------------------------------------

_CLASS = "id, asset_id, state, loss_class"


def class_rows(session: Session, asset_id: int | None) -> list[Row]:
    """The global rows, and the asset's own when one is given (globals first)."""
    return rows(
        session,
        f"SELECT {_CLASS} FROM state_loss_classes"
        " WHERE asset_id IS NULL OR asset_id = CAST(:a AS integer)"
        " ORDER BY asset_id NULLS FIRST, state",
        {"a": asset_id},
    )


def get_class(session: Session, class_id: int, *, lock: bool = False) -> Row | None:
    """One mapping row by id."""
    return first(
        session,
        f"SELECT {_CLASS} FROM state_loss_classes WHERE id = :id" + (_FOR_UPDATE if lock else ""),
        {"id": class_id},
    )


def class_by_key(session: Session, *, asset_id: int | None, state: str) -> Row | None:
    """The row for (asset or global, state), locked for a change."""
    return first(
        session,
        f"SELECT {_CLASS} FROM state_loss_classes"
        " WHERE coalesce(asset_id, 0) = coalesce(CAST(:a AS integer), 0) AND state = :s"
        " FOR UPDATE",
        {"a": asset_id, "s": state},
    )


def put_class(session: Session, *, asset_id: int | None, state: str, loss_class: str) -> Row:
    """Insert or replace the loss class of (asset or global, state); returns the row."""
    return rows(
        session,
        "INSERT INTO state_loss_classes (asset_id, state, loss_class) VALUES (:a, :s, :c)"
        " ON CONFLICT ((coalesce(asset_id, 0)), state)"
        f" DO UPDATE SET loss_class = excluded.loss_class RETURNING {_CLASS}",
        {"a": asset_id, "s": state, "c": loss_class},
    )[0]


def delete_class(session: Session, class_id: int) -> None:
    """Delete a mapping row."""
    session.execute(text("DELETE FROM state_loss_classes WHERE id = :id"), {"id": class_id})


# --- machine settings ------------------------------------------------------------------


def get_settings(session: Session, asset_id: int, *, lock: bool = False) -> Row | None:
    """A machine's stored settings."""
    return first(
        session,
        "SELECT asset_id, micro_stop_s, is_line_output FROM machine_settings"
        " WHERE asset_id = :a" + (_FOR_UPDATE if lock else ""),
        {"a": asset_id},
    )


def put_settings(
    session: Session, *, asset_id: int, micro_stop_s: float, is_line_output: bool
) -> None:
    """Insert or replace a machine's settings."""
    session.execute(
        text(
            "INSERT INTO machine_settings (asset_id, micro_stop_s, is_line_output)"
            " VALUES (:a, :m, :o) ON CONFLICT (asset_id) DO UPDATE"
            " SET micro_stop_s = excluded.micro_stop_s, is_line_output = excluded.is_line_output"
        ),
        {"a": asset_id, "m": micro_stop_s, "o": is_line_output},
    )


def other_outputs(session: Session, *, line_id: int, asset_id: int) -> list[Row]:
    """The line's other machines flagged is_line_output (locked for the change)."""
    return rows(
        session,
        "SELECT m.asset_id, a.path, m.micro_stop_s, m.is_line_output FROM machine_settings m"
        " JOIN assets a ON a.id = m.asset_id"
        " WHERE a.parent_id = :line AND a.level = 'machine' AND m.is_line_output"
        " AND m.asset_id <> :a ORDER BY m.asset_id FOR UPDATE OF m",
        {"line": line_id, "a": asset_id},
    )


def clear_output(session: Session, asset_id: int) -> None:
    """Unflag a machine as its line's output."""
    session.execute(
        text("UPDATE machine_settings SET is_line_output = false WHERE asset_id = :a"),
        {"a": asset_id},
    )
