"""A news simulator with a known truth, and an optional planted effect on prices.

* :func:`simulate_news` — scored :class:`~tickcast.news.items.NewsItem` s for the given
  symbols: Poisson arrivals (``rate_per_hour`` per symbol), each item about one symbol,
  its sentiment drawn uniformly from [-1, 1] (the truth: ``scorer="sim"``), a headline
  whose words carry that tone (so a lexicon scorer roughly agrees), and
  ``available_at = published_at + delay_s`` (CONTRACT §8, replays and backfills).
  Deterministic: same arguments, same items.
* :func:`planted_drift` — the hook for :class:`tickcast.sim.MarketSimulator`'s
  ``drift``: after an item becomes available, its symbol's mid drifts by
  ``sentiment * effect_bps`` in total, at a rate decaying with time constant ``tau_s``
  (2 min by default). A model that sees the news at ``t`` (e.g. the 2-minute decayed
  sentiment, exactly proportional to the drift still to come) can predict part of the
  next minute's return; one that does not, cannot.
* **Control**: simulate the market without the drift (or with the drift of items of
  another seed): the news is then unrelated to prices and must not help any model.

>>> items = simulate_news(["BTC/USD", "ETH/USD"], 0, 3_600_000_000, seed=1, rate_per_hour=30)
>>> len(items) > 30, all(it.available_at_us >= it.published_at_us for it in items)
(True, True)
>>> items == simulate_news(["BTC/USD", "ETH/USD"], 0, 3_600_000_000, seed=1, rate_per_hour=30)
True
>>> it = items[0]
>>> d = planted_drift([it], effect_bps=12.0, tau_s=60)
>>> import numpy as np
>>> t = np.array([it.available_at_us - 1, it.available_at_us, it.available_at_us + 60_000_000])
>>> [round(float(x), 6) for x in d(it.symbols[0], t) / (it.sentiments[0] * 12.0 / 60)]
[0.0, 1.0, 0.367879]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tickcast.news.items import NewsItem

_GOOD = ("surges", "rallies", "gains", "record inflows", "upgrade", "strong demand", "approval")
_BAD = ("plunges", "slumps", "losses", "outflows", "downgrade", "weak demand", "lawsuit")
_NEUTRAL = ("trades sideways", "holds steady", "in focus", "update")


def simulate_news(symbols: Sequence[str], start_us: int, end_us: int, seed: int, *,
                  rate_per_hour: float = 20.0, delay_s: float = 0.0, source: str = "sim") -> list[NewsItem]:
    """Scored items published in ``[start_us, end_us)``, sorted by ``available_at``."""
    if end_us <= start_us or rate_per_hour <= 0 or not symbols:
        return []
    rng = np.random.default_rng([seed, 11])
    span_h = (end_us - start_us) / 3.6e9
    n = int(rng.poisson(rate_per_hour * span_h * len(symbols)))
    published = np.sort(rng.integers(start_us, end_us, size=n))
    which = rng.integers(0, len(symbols), size=n)
    sent = np.round(rng.uniform(-1.0, 1.0, size=n), 3)
    words = rng.integers(0, 1 << 16, size=n)
    delay_us = int(round(delay_s * 1e6))
    items = []
    for k in range(n):
        sym, s = symbols[int(which[k])], float(sent[k])
        base = sym.split("/")[0]
        tone = _GOOD if s > 0.2 else _BAD if s < -0.2 else _NEUTRAL
        title = f"{base} {tone[int(words[k]) % len(tone)]}"
        items.append(NewsItem(f"{source}-{seed}-{k}", int(published[k]), int(published[k]) + delay_us, source, title,
                              "", f"https://sim.invalid/{seed}/{k}", (sym,), (s,), "sim"))
    return sorted(items, key=lambda it: (it.available_at_us, it.id))


def planted_drift(items: Sequence[NewsItem], effect_bps: float = 20.0,
                  tau_s: float = 120.0) -> Callable[[str, np.ndarray], np.ndarray]:
    """``drift(symbol, t_us) -> bps per second``: the sum over the symbol's items with
    ``available_at <= t`` of ``sentiment * effect_bps / tau_s * exp(-(t - available_at) / tau_s)``:
    each item moves its symbol's mid by ``sentiment * effect_bps`` in total, most of it in
    the first ``tau_s`` seconds. (Items older than ``30 tau_s`` are cut off: e^-30.)"""
    tau_us = tau_s * 1e6
    cut = int(30 * tau_us)
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for it in items:
        for sym, s in zip(it.symbols, it.sentiments, strict=True):
            by_symbol.setdefault(sym, []).append((it.available_at_us, s * effect_bps / tau_s))
    series = {sym: (np.array([a for a, _ in evs], dtype=np.int64), np.array([r for _, r in evs], dtype=float))
              for sym, evs in ((k, sorted(v)) for k, v in by_symbol.items())}

    def drift(symbol: str, t_us: np.ndarray) -> np.ndarray:
        t = np.asarray(t_us, dtype=np.int64)
        out = np.zeros(t.shape)
        got = series.get(symbol)
        if got is None or t.size == 0:
            return out
        avail, rate = got
        lo, hi = np.searchsorted(avail, [int(t.min()) - cut, int(t.max())], side="right")
        for a, r in zip(avail[lo:hi].tolist(), rate[lo:hi].tolist(), strict=True):
            age = t - a
            live = (age >= 0) & (age < cut)
            out[live] += r * np.exp(-age[live] / tau_us)
        return out

    return drift
