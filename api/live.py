"""What ``/predict`` and ``/models`` take from the live scoreboard (``tickcast.scoreboard``),
which the feature flow writes per symbol to the online store: the current choice of
``model=auto`` with its reason, and each candidate's interval half-widths.

>>> board = {"choice": "online", "reason": "online beats persistence: …",
...          "candidates": {"online": {"intervals_bps": {"80": 10.0, "95": 20.0}}}}
>>> auto_choice(board)
('online', 'online beats persistence: …')
>>> {k: [round(x, 2) for x in v] for k, v in intervals(board, "online", 100.0).items()}
{'80': [99.9, 100.1], '95': [99.8, 100.2]}
>>> auto_choice(None)[0] is None
True
"""

from __future__ import annotations

import math
from typing import Any

from tickcast.selection import interval

NO_BOARD = ("no live scoreboard yet (the feature flow has scored no label): the promoted production model, "
            "else the online model")


MAX_WIDTH_BPS = 100_000.0  # 1,000 % in log terms: anything wider is a corrupt scoreboard


def auto_choice(board: dict[str, Any] | None) -> tuple[str | None, str]:
    """(candidate, reason) that ``model=auto`` serves; ``(None, why)`` without a scoreboard."""
    if not board or board.get("choice") not in ("production", "online", "persistence"):
        return None, NO_BOARD
    return str(board["choice"]), str(board.get("reason", ""))


def intervals(board: dict[str, Any] | None, candidate: str, price: float) -> dict[str, list[float]]:
    """``{"80": [lo, hi], …}`` around ``price`` from ``candidate``'s half-widths (log bps);
    empty while its residual record is too short."""
    if not board:
        return {}
    cands = board.get("candidates")
    cand = cands.get(candidate) if isinstance(cands, dict) else None
    widths = cand.get("intervals_bps") if isinstance(cand, dict) else None
    out: dict[str, list[float]] = {}
    for level, w in (widths.items() if isinstance(widths, dict) else ()):
        # a half-width beyond MAX_WIDTH_BPS is not an interval (and would overflow exp)
        if isinstance(w, int | float) and math.isfinite(w) and 0 <= w <= MAX_WIDTH_BPS:
            out[str(level)] = interval(price, float(w))
    return out


def scoreboard_view(board: dict[str, Any]) -> dict[str, Any]:
    """The ``/models`` entry of one symbol: the choice, since when, why, and each
    candidate's MAE on the window with its test against the choice."""
    keep = ("as_of", "choice", "name", "version", "reason", "since", "switches", "labels", "window", "alpha")
    out = {k: board.get(k) for k in keep}
    cands = board.get("candidates")
    out["candidates"] = {
        name: {k: c.get(k) for k in ("name", "version", "mae", "n", "p_value", "margin")}
        for name, c in (cands.items() if isinstance(cands, dict) else ()) if isinstance(c, dict)}
    return out
