"""What ``/predict`` adds for models that need feature groups besides ``price``.

:class:`GroupInputs` reads each extra group's online state (micro-cached per worker for
``TICKCAST_FEATURE_CACHE_SECONDS``, like the price row) and computes its values at the
price row's time ``t`` with the group's own :meth:`~tickcast.groups.FeatureGroup.values_at`
— for ``news`` the very function the training join uses, so what is served at ``t`` is
what training saw at ``t`` (tests/test_news_groups.py, the skew test). A symbol without
news gets the group's "no news" values (:data:`tickcast.news.features.NO_NEWS`) and
``as_of: null``: the model still answers.
"""

from __future__ import annotations

import time
from typing import Any

from tickcast.groups import GroupError, group
from tickcast.schema import us_to_iso


class GroupMismatch(ValueError):
    """The model was trained on another definition version of a group (or an unknown group)."""


class GroupInputs:
    def __init__(self, online: Any, cache_s: float) -> None:
        self.online = online
        self.cache_s = cache_s
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        # the values computed last per (group, symbol): reused while the state object (one
        # cache period) and t (the price row's time: one candle) are the same — a pure
        # function of both, so reusing it changes no number
        self._last: dict[tuple[str, str], tuple[Any, int, dict[str, float], int | None]] = {}

    def _state(self, g: Any, symbol: str) -> Any:
        key = (g.name, symbol)
        if self.cache_s > 0:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.cache_s:
                return hit[1]
        state = self.online.read(g, symbol)
        if self.cache_s > 0:
            self._cache[key] = (time.monotonic(), state)
        return state

    def inputs(self, predictor: Any, symbol: str, t_us: int) -> tuple[dict[str, float], dict[str, Any]]:
        """(extra model inputs at ``t_us``, ``{group: {"version", "as_of", "age_seconds"}}``) for
        the predictor's groups besides ``price``. Raises :class:`GroupMismatch` if a group's
        definition version differs from the one the model was trained on."""
        extra: dict[str, float] = {}
        info: dict[str, Any] = {}
        trained = dict(getattr(predictor, "group_versions", ()))
        now = time.time()
        for name in predictor.extra_groups:
            try:
                g = group(name)
            except GroupError as e:
                raise GroupMismatch(str(e)) from None
            if trained.get(name, g.version) != g.version:
                raise GroupMismatch(f"the model was trained on {name} features {trained[name]} but this server "
                                    f"computes {g.version}; retrain")
            state = self._state(g, symbol)
            memo = self._last.get((name, symbol))
            if memo is not None and memo[0] is state and state is not None and memo[1] == t_us:
                values, as_of = memo[2], memo[3]
            else:
                values, as_of = g.values_at(state, t_us)
                self._last[(name, symbol)] = (state, t_us, values, as_of)
            extra.update(values)
            info[name] = {"version": g.version, "as_of": us_to_iso(as_of) if as_of is not None else None,
                          "age_seconds": round(max(0.0, now - as_of / 1e6), 3) if as_of is not None else None}
        return extra, info
