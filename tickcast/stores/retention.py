"""How long each offline table keeps its rows.

``TICKCAST_RETENTION_DAYS_<TABLE>`` (e.g. ``TICKCAST_RETENTION_DAYS_DEAD_LETTERS=7``) sets one
table; ``TICKCAST_RETENTION_DAYS`` sets every table without its own variable; otherwise the
default below applies. Whole days, ``0`` = keep forever. A row expires that many days
after it was **written** (its version ``_v``, the insertion time, by the wall clock) —
not after its event time: a replay or backfill of old history keeps its predictions and
metrics for the full span, and both backends use the same rule (a ClickHouse TTL on
``_v``). For a live source the two coincide.

Defaults — market history is the product, diagnostics are not:

====================  =========  =====================================================
table                 days       why
====================  =========  =====================================================
``candles``           forever    the history every feature and model is built from
``features``          forever    the training set
``training_runs``     forever    one row per run: the audit trail of promotions
``news``              forever    scored headlines: the news group's training history
``news_features``     forever    news features at each item's time (dashboards)
``predictions``       90         online predictions: recent accuracy is what matters
``model_metrics``     90         a row per model every 12 matured labels
``drift_events``      365        rare; kept a year for post-mortems
``ingest_stats``      90         connection counters per interval
``dead_letters``      30         bad input and late trades: for debugging the feed
====================  =========  =====================================================

Applied on both backends: a ClickHouse server gets a ``TTL`` on the table (its merges
drop expired rows); the embedded lake deletes whole parts whose rows all expired and
rewrites the parts with some expired rows (under the compaction lock, the replaced
parts deleted under the readers' lock, like a compaction) — see
:meth:`tickcast.stores.offline.LakeStore.expire`.

>>> retention_days({"TICKCAST_RETENTION_DAYS_DEAD_LETTERS": "7"})["dead_letters"]
7
>>> retention_days({"TICKCAST_RETENTION_DAYS": "400"})["candles"]
400
>>> retention_days({})["features"]
0
"""

from __future__ import annotations

from collections.abc import Mapping

from tickcast.config import ConfigError, parse_number
from tickcast.stores.errors import StoreError
from tickcast.stores.tables import TABLES

ENV = "TICKCAST_RETENTION_DAYS"
DEFAULT_DAYS: dict[str, int] = {
    "candles": 0, "features": 0, "training_runs": 0, "news": 0, "news_features": 0,
    "predictions": 90, "model_metrics": 90, "drift_events": 365, "ingest_stats": 90, "dead_letters": 30,
}
assert set(DEFAULT_DAYS) == set(TABLES), "every table needs a documented retention default"


def _days(var: str, raw: str) -> int:
    try:
        return int(parse_number(var, raw.strip(), 0, whole=True, accepted="whole days >= 0 (0 = keep forever)"))
    except ConfigError as e:
        raise StoreError(str(e)) from None


def retention_days(env: Mapping[str, str]) -> dict[str, int]:
    """Days to keep per table (0 = forever) from ``env`` (usually ``os.environ``).
    Raises :class:`StoreError` with one line naming a bad variable or an unknown table."""
    known = {f"{ENV}_{name.upper()}" for name in TABLES}
    unknown = sorted(k for k in env if k.startswith(ENV + "_") and k not in known)
    if unknown:
        raise StoreError(f"{unknown[0]}: unknown table; per-table retention variables are "
                         f"{', '.join(sorted(known))}")
    base = _days(ENV, env[ENV]) if env.get(ENV, "").strip() else None
    out: dict[str, int] = {}
    for name in TABLES:
        var = f"{ENV}_{name.upper()}"
        if env.get(var, "").strip():
            out[name] = _days(var, env[var])
        else:
            out[name] = DEFAULT_DAYS[name] if base is None else base
    return out
