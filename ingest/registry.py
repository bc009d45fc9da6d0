"""Auto-registration of assets and tags, with an in-memory cache of their ids.

The asset tree has no enterprise root: a site is a root (``parent_id`` NULL, path
``site``), then area (``site/area``), line and machine (``site/area/line/machine``), each
created the first time a topic or a birth names it. Tags are created the first time a
sample or a birth names them; a birth sets (and a later birth updates) datatype and unit.

Race-safe with several workers: ``INSERT ... ON CONFLICT DO NOTHING`` then a ``SELECT`` of
the ids (under READ COMMITTED the second statement sees what another worker committed, and
an insert of a row another open transaction inserted waits for that transaction). Inputs
are sorted so two workers lock the same keys in the same order.

The cache follows the transaction: ids learned in a transaction that rolls back (a whole
batch, or one message's savepoint) are forgotten with ``rollback(mark)``. ``committed_tags``
reads a second copy that only ever holds committed ids: another thread may use it (the
service packs COPY rows on its pump thread) while the writer's thread registers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from edge_agent.contract import AssetPath

LEVELS = ("site", "area", "line", "machine")

_INSERT_ASSETS = """
INSERT INTO assets (parent_id, level, name, path)
SELECT * FROM unnest(%s::integer[], %s::text[], %s::text[], %s::text[])
ON CONFLICT (path) DO NOTHING
"""
_SELECT_ASSETS = "SELECT path, id FROM assets WHERE path = ANY(%s::text[])"
_INSERT_TAGS = """
INSERT INTO tags (asset_id, name, agent)
SELECT * FROM unnest(%s::integer[], %s::text[], %s::text[])
ON CONFLICT (asset_id, name) DO NOTHING
"""
_UPSERT_TAG_META = """
INSERT INTO tags (asset_id, name, datatype, unit, agent)
SELECT * FROM unnest(%s::integer[], %s::text[], %s::text[], %s::text[], %s::text[])
ON CONFLICT (asset_id, name) DO UPDATE SET datatype = EXCLUDED.datatype, unit = EXCLUDED.unit
WHERE (tags.datatype, tags.unit) IS DISTINCT FROM (EXCLUDED.datatype, EXCLUDED.unit)
"""
_SELECT_TAGS = """
SELECT t.asset_id, t.name, t.id FROM tags t
JOIN unnest(%s::integer[], %s::text[]) AS w (asset_id, name)
  ON t.asset_id = w.asset_id AND t.name = w.name
"""

Cursor = psycopg.Cursor[Any]


class Registry:
    """Asset and tag ids by path and name; registers what it has not seen."""

    def __init__(self) -> None:
        self._assets: dict[str, int] = {}
        self._tags: dict[int, dict[str, int]] = {}
        self._journal: list[tuple[str, int | None, str]] = []
        # Committed ids only, safe to read from another thread: entries are added after the
        # commit and never removed (``clear`` replaces the dicts).
        self._done_assets: dict[str, int] = {}
        self._done_tags: dict[int, dict[str, int]] = {}

    # ---------------------------------------------------------------- transaction bookkeeping

    def mark(self) -> int:
        """A point to roll the cache back to (taken where a transaction or savepoint starts)."""
        return len(self._journal)

    def rollback(self, mark: int = 0) -> None:
        """Forget what was learned since ``mark``: its transaction did not commit."""
        while len(self._journal) > mark:
            kind, asset_id, name = self._journal.pop()
            if kind == "asset":
                self._assets.pop(name, None)
            elif asset_id is not None:
                self._tags.get(asset_id, {}).pop(name, None)

    def commit(self) -> None:
        """What was learned is durable now."""
        for kind, asset_id, name in self._journal:
            if kind == "asset":
                self._done_assets[name] = self._assets[name]
            elif asset_id is not None:
                tags = self._done_tags.setdefault(asset_id, {})
                tags[name] = self._tags[asset_id][name]
        self._journal.clear()

    def clear(self) -> None:
        """Forget everything (the database may have changed under us)."""
        self._assets = {}
        self._tags = {}
        self._journal = []
        self._done_assets = {}
        self._done_tags = {}

    # ---------------------------------------------------------------- lookups

    def asset_id(self, path: AssetPath | str) -> int:
        """The id of a registered asset (KeyError when ``ensure_assets`` did not see it)."""
        return self._assets[str(path)]

    def tags_of(self, asset_id: int) -> dict[str, int]:
        """Tag name -> id of one asset, as far as known (the live dict: do not modify)."""
        tags = self._tags.get(asset_id)
        if tags is None:
            tags = self._tags[asset_id] = {}
        return tags

    def committed_tags(self, path: AssetPath | str) -> dict[str, int] | None:
        """Tag name -> id of a machine, committed ids only (any thread; do not modify)."""
        asset_id = self._done_assets.get(str(path))
        return None if asset_id is None else self._done_tags.get(asset_id)

    # ---------------------------------------------------------------- registration

    def ensure_assets(self, cur: Cursor, paths: Iterable[AssetPath | str]) -> None:
        """Register the machines (and their site, area and line) not known yet."""
        missing = {str(p) for p in paths} - self._assets.keys()
        if not missing:
            return
        split = [p.split("/") for p in missing]
        for depth, level in enumerate(LEVELS, start=1):
            want = sorted({"/".join(parts[:depth]) for parts in split} - self._assets.keys())
            if not want:
                continue
            parents = [self._assets[w.rsplit("/", 1)[0]] if depth > 1 else None for w in want]
            names = [w.rsplit("/", 1)[-1] for w in want]
            cur.execute(_INSERT_ASSETS, (parents, [level] * len(want), names, want))
            for path, asset_id in cur.execute(_SELECT_ASSETS, (want,)).fetchall():
                self._assets[path] = asset_id
                self._journal.append(("asset", None, path))

    def ensure_tags(self, cur: Cursor, wanted: Iterable[tuple[int, str, str | None]]) -> None:
        """Register (asset id, tag name, agent) triples whose tag is not known yet."""
        todo = sorted({w for w in wanted if w[1] not in self.tags_of(w[0])})
        if not todo:
            return
        ids = [w[0] for w in todo]
        names = [w[1] for w in todo]
        cur.execute(_INSERT_TAGS, (ids, names, [w[2] for w in todo]))
        self._learn_tags(cur, ids, names)

    def update_tag_meta(
        self, cur: Cursor, infos: Iterable[tuple[int, str, str, str | None, str | None]]
    ) -> None:
        """Create or update tags from births: (asset id, name, datatype, unit, agent).

        Of several entries for one tag the last wins (callers pass births oldest first).
        """
        last = {(i[0], i[1]): i for i in infos}
        if not last:
            return
        rows = [last[k] for k in sorted(last)]
        cols = [[r[j] for r in rows] for j in range(5)]
        cur.execute(_UPSERT_TAG_META, cols)
        self._learn_tags(cur, cols[0], cols[1])

    def _learn_tags(self, cur: Cursor, ids: list[Any], names: list[Any]) -> None:
        for asset_id, name, tag_id in cur.execute(_SELECT_TAGS, (ids, names)).fetchall():
            tags = self.tags_of(asset_id)
            if name not in tags:
                tags[name] = tag_id
                self._journal.append(("tag", asset_id, name))
