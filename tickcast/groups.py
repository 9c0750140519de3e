"""Feature groups: the one home of "a set of features a pipeline produces".

A group has a **name**, an **entity key** (``symbol``), an **event-time column**
(``ts``), typed **columns** (Float64 each) and a **definition version**; it says where
its rows live offline (:attr:`FeatureGroup.table`), how they are kept online
(:attr:`FeatureGroup.online_layout`), and how its values at a time ``t`` are found —
point-in-time, the same way for training (:meth:`FeatureGroup.join`, many ``t`` at
once) and serving (:meth:`FeatureGroup.values_at`, one ``t``).

Registered groups (:data:`REGISTRY`, name -> ``module:attribute``, imported lazily):

* ``price`` — the candle features of :mod:`tickcast.features` (table ``features``,
  CONTRACT §5; online: the newest row per symbol). It is the **base** group: label rows
  are its rows, every other group is joined onto them.
* ``news`` — the news features of :mod:`tickcast.news.features` (table
  ``news_features``; online: each symbol's items of the last 6 h, because its values
  depend on ``t`` itself).

A third pipeline is one new module defining a :class:`FeatureGroup` subclass instance
plus one line in :data:`REGISTRY`; its offline table (``symbol``, ``ts``, one Float64
per column, ``feature_set_version``) is declared by :mod:`tickcast.stores.tables` from
the group, the online store, dataset builder, trainer (ablation) and API take it from
there (README, "Feature groups").

Online layouts (:class:`tickcast.stores.online.OnlineStore`):

* ``"latest"`` — one hash per symbol, replaced by a newer row only (compare-and-set on
  event time). :meth:`online_entries` gives ``(symbol, ts_us, "", [field, value, ...])``.
* ``"recent"`` — one hash per symbol of members ``id -> "ts_us value"``, trimmed to the
  :attr:`keep_us` before the newest member. :meth:`online_entries` gives
  ``(symbol, ts_us, id, [value])``.

>>> sorted(REGISTRY), group("price").table, group("news").table
(['news', 'price'], 'features', 'news_features')
>>> group("news").version, group("news").online_layout
('nf1', 'recent')
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

#: name -> "module:attribute" of the group object. Registration of a new pipeline = one line.
REGISTRY: dict[str, str] = {
    "price": "tickcast.groups:PRICE",
    "news": "tickcast.news.features:GROUP",
}
BASE = "price"


def fmt_value(v: Any) -> str:
    """A value as the online store writes it: floats round-trip exactly through ``float()``
    (``repr``; ``nan``/``inf`` as such)."""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


class GroupError(ValueError):
    """Unknown group, or a group that cannot serve what is asked; the message says why."""


class FeatureGroup:
    """The interface of a feature group (subclass it; see the module docstring)."""

    name: ClassVar[str]
    version: ClassVar[str]  # the definition version, stamped on rows and on the models that use it
    columns: ClassVar[tuple[str, ...]]
    table: ClassVar[str]
    entity: ClassVar[str] = "symbol"
    event_time: ClassVar[str] = "ts"
    online_layout: ClassVar[str] = "latest"  # "latest" | "recent"
    keep_us: ClassVar[int] = 0  # "recent": how far back values at t can look

    def __repr__(self) -> str:
        return f"<feature group {self.name} {self.version}>"

    def online_entries(self, rows: Iterable[Any]) -> list[tuple[str, int, str, list[Any]]]:
        """What :meth:`OnlineStore.write` stores for ``rows`` (layout-specific, above)."""
        raise NotImplementedError

    def parse_online(self, raw: Mapping[str, str]) -> Any:
        """The stored hash (decoded strings) -> the group's online state."""
        raise NotImplementedError

    def values_at(self, state: Any, t_us: int) -> tuple[dict[str, float], int | None]:
        """Serving: the group's values at ``t_us`` from its online state (None = nothing
        stored) and their ``as_of`` (event time of the newest data used; None if none)."""
        raise NotImplementedError

    def load(self, store: Any, symbol: str, since_us: int | None, until_us: int | None) -> Any:
        """Training: what :meth:`join` needs, read from the offline store, for label rows in
        ``[since_us, until_us)`` (the group reaches back :attr:`keep_us` itself)."""
        raise NotImplementedError

    def join(self, source: Any, ts_us: Any) -> Any:
        """Training: a DataFrame of :attr:`columns` with one row per time of ``ts_us``, each
        computed from data available at that time only (point-in-time)."""
        raise NotImplementedError


class PriceGroup(FeatureGroup):
    """The candle features (:mod:`tickcast.features`); rows are ``FeatureRow``."""

    name = "price"
    table = "features"

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        from tickcast.features import FEATURE_NAMES

        return tuple(FEATURE_NAMES)

    @property
    def version(self) -> str:  # type: ignore[override]
        from tickcast.features import DEFINITION_VERSION

        return DEFINITION_VERSION

    def online_entries(self, rows: Iterable[Any]) -> list[tuple[str, int, str, list[Any]]]:
        newest: dict[str, Any] = {}
        for r in rows:
            cur = newest.get(r.symbol)
            if cur is None or r.ts_us >= cur.ts_us:
                newest[r.symbol] = r
        out = []
        for r in newest.values():
            fields: list[Any] = ["close", fmt_value(r.close), "feature_set_version", r.feature_set_version]
            for k, v in r.values.items():
                fields += [k, fmt_value(v)]
            out.append((r.symbol, int(r.ts_us), "", fields))
        return out

    def parse_online(self, raw: Mapping[str, str]) -> dict[str, Any] | None:
        if not raw:
            return None
        out: dict[str, Any] = {}
        for key, val in raw.items():
            if key == "feature_set_version":
                out[key] = val
            elif key == "ts_us":
                out[key] = int(val)
            else:
                out[key] = float(val)
        return out

    def values_at(self, state: Any, t_us: int) -> tuple[dict[str, float], int | None]:
        if not state or int(state["ts_us"]) > t_us:
            return {}, None
        return {k: v for k, v in state.items() if k in self.columns}, int(state["ts_us"])

    def load(self, store: Any, symbol: str, since_us: int | None, until_us: int | None) -> Any:
        from models.dataset import load_features

        return load_features(store, [symbol], since_us, until_us)

    def join(self, source: Any, ts_us: Any) -> Any:
        import pandas as pd

        left = pd.DataFrame({"ts_us": pd.Series(ts_us, dtype="int64")})
        right = source[["ts_us", *self.columns]].sort_values("ts_us")
        return pd.merge_asof(left, right, on="ts_us", direction="backward")[list(self.columns)]


PRICE = PriceGroup()


def group(name: str) -> FeatureGroup:
    """The registered group ``name``; :class:`GroupError` names the known ones otherwise."""
    target = REGISTRY.get(name)
    if target is None:
        raise GroupError(f"unknown feature group {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    module, _, attr = target.partition(":")
    g = getattr(importlib.import_module(module), attr)
    if not isinstance(g, FeatureGroup) or g.name != name:
        raise GroupError(f"{target} is not the FeatureGroup {name!r}")
    return g


def all_groups() -> list[FeatureGroup]:
    """Every registered group, the base (``price``) first."""
    return [group(BASE)] + [group(n) for n in sorted(REGISTRY) if n != BASE]


def extra_groups(names: Iterable[str]) -> list[FeatureGroup]:
    """The groups of ``names`` other than the base, in a stable order."""
    return [group(n) for n in sorted(set(names)) if n != BASE]
