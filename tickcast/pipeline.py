"""Per-symbol processing core: trades -> candles -> features, framework-free.

:class:`SymbolPipeline` is the whole per-symbol computation of the feature flow.
The Bytewax dataflow (``dataflows.features``) drives it from a stateful operator;
:func:`run_batch` drives the very same object from a plain loop for backfill,
training and the stream/batch parity test. Nothing here imports Bytewax.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tickcast.candles import SymbolWindower
from tickcast.features import FeatureState
from tickcast.learner import OnlineLearner
from tickcast.schema import (
    MAX_TRADE_ID_JUMP,
    Candle,
    DeadLetter,
    DriftEvent,
    FeatureRow,
    ModelMetrics,
    Prediction,
    Trade,
    safe_iso,
    trade_json,
)
from tickcast.scoreboard import LiveBoard


@dataclass(slots=True)
class StepOutput:
    """What one step of the pipeline produced (any part may be empty)."""

    candles: list[Candle] = field(default_factory=list)
    features: list[FeatureRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    metrics: list[ModelMetrics] = field(default_factory=list)
    drift_events: list[DriftEvent] = field(default_factory=list)
    snapshots: list[ModelSnapshot] = field(default_factory=list)
    selection: list[dict[str, Any]] = field(default_factory=list)  # live scoreboards (tickcast.scoreboard)

    def extend(self, other: StepOutput) -> None:
        self.candles.extend(other.candles)
        self.features.extend(other.features)
        self.dead_letters.extend(other.dead_letters)
        self.predictions.extend(other.predictions)
        self.metrics.extend(other.metrics)
        self.drift_events.extend(other.drift_events)
        self.snapshots.extend(other.snapshots)
        self.selection.extend(other.selection)

    def __bool__(self) -> bool:
        return bool(self.candles or self.features or self.dead_letters or self.predictions
                    or self.metrics or self.drift_events or self.snapshots)

    @property
    def rows(self) -> int:
        return (len(self.candles) + len(self.features) + len(self.dead_letters) + len(self.predictions)
                + len(self.metrics) + len(self.drift_events))


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """A pickled copy of an online model, taken inside the flow, for the registry."""

    symbol: str  # the registry names it (models.registry.online_model_name)
    payload: bytes
    meta: dict[str, Any]


def late_dead_letter(t: Trade, emitted_until_us: int | None, lateness_us: int, now_us: int) -> DeadLetter:
    raw = trade_json(t)
    until = safe_iso(emitted_until_us) if emitted_until_us is not None else "?"
    return DeadLetter(
        received_at_us=now_us,
        source="pipeline",
        raw=raw,
        reason=(
            f"late trade: event time {safe_iso(t.ts_us)} is before {until}, where the {t.symbol} "
            f"candles were already emitted (allowed lateness {lateness_us / 1e6:g} s)"
        ),
        position=f"{t.symbol}#{t.trade_id}",
    )


class SymbolPipeline:
    """Candles and features of ONE symbol; picklable (it is the Bytewax recovery state)."""

    def __init__(self, symbol: str, window_seconds: int, lateness_us: int, *,
                 horizon_seconds: int = 60, online_model: str = "off", snapshot_every: int = 360,
                 seed: int = 42, dedupe: bool = False, interval_levels: tuple[float, ...] = (0.8, 0.95)) -> None:
        self.symbol = symbol
        self.window_seconds = window_seconds
        self.windower = SymbolWindower(symbol, window_seconds * 1_000_000, lateness_us)
        self.features = FeatureState(window_seconds)
        self.late_count = 0
        self.max_trade_id: int | None = None  # newest trade id seen (implausible jumps refused)
        self.dedupe = dedupe  # drop repeats (id <= the newest): for at-least-once sources (Kafka)
        self.repeats = 0
        self._learner_args = (horizon_seconds, online_model, seed, snapshot_every)
        self.learner: OnlineLearner | None = None
        self.board: LiveBoard | None = None  # live model choice + intervals (with online learning)
        self.interval_levels = interval_levels
        # (symbol) -> (name, version, Predictor) of the promoted model, or None; set by the
        # flow (registry watcher), never pickled
        self.production: Any = None
        if symbol:
            self.bind(symbol)

    def bind(self, symbol: str) -> None:
        """Name a pipeline built before its key was known (Bytewax builders get no key)."""
        self.symbol = symbol
        self.windower.symbol = symbol
        horizon, kind, seed, every = self._learner_args
        if kind != "off" and self.learner is None:
            self.learner = OnlineLearner(symbol, horizon, kind, seed=seed, snapshot_every=every)
            self.board = LiveBoard(symbol, horizon, levels=getattr(self, "interval_levels", (0.8, 0.95)))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["production"] = None  # a live registry handle, re-attached by the flow
        return state

    def _candles(self, candles: list[Candle], out: StepOutput) -> StepOutput:
        out.candles.extend(candles)
        update = self.features.update
        learner = self.learner
        board = getattr(self, "board", None)
        if board is None and learner is not None:  # state recovered from before the scoreboard existed
            board = self.board = LiveBoard(self.symbol, learner.horizon_seconds,
                                           levels=getattr(self, "interval_levels", (0.8, 0.95)))
        rows = [update(c) for c in candles]
        out.features.extend(rows)
        if learner is None or not rows:
            return out
        lo = learner.on_rows(rows)
        online = lo.online
        if board is not None:
            prod = getattr(self, "production", None)
            bo = board.on_rows(rows, online, prod(self.symbol) if prod is not None else None)
            online = bo.online  # with their prediction intervals
        out.predictions.extend(p for p in online if p is not None)
        out.metrics.extend(lo.metrics)
        if board is not None:
            out.predictions.extend(bo.predictions)
            out.metrics.extend(bo.metrics)
            out.selection = [board.state()]
        out.drift_events.extend(lo.drift_events)
        out.snapshots.extend(ModelSnapshot(self.symbol, payload, meta) for payload, meta in lo.snapshots)
        return out

    def _plausible(self, trades: list[Trade], now_us: int, out: StepOutput) -> list[Trade]:
        """Refuse (as dead letters) trades whose id jumps more than MAX_TRADE_ID_JUMP above
        the newest id of this symbol, and with ``dedupe`` (a source that may re-send: the
        Kafka topic is at-least-once) drop repeats: ids at or below the newest one. The
        newest id is state, recovered with the rest. An id that far *below* the newest
        means the newest was not believable (a hostile first record): it is replaced."""
        top = getattr(self, "max_trade_id", None)
        dedupe = getattr(self, "dedupe", False)
        hi = max(t.trade_id for t in trades)
        if top is not None and hi <= top + MAX_TRADE_ID_JUMP and not dedupe:  # the common case
            if hi > top:
                self.max_trade_id = hi
            return trades
        kept: list[Trade] = []
        for t in trades:
            tid = t.trade_id
            if top is not None:
                if tid > top + MAX_TRADE_ID_JUMP:
                    out.dead_letters.append(DeadLetter(
                        now_us, "pipeline", trade_json(t),
                        f"implausible trade_id {tid}: more than {MAX_TRADE_ID_JUMP:,} above the newest "
                        f"{t.symbol} trade ({top}); not accepted as a new high-water mark", f"{t.symbol}#{tid}"))
                    continue
                if dedupe and tid <= top:
                    if tid > top - MAX_TRADE_ID_JUMP:
                        self.repeats = getattr(self, "repeats", 0) + 1
                        continue  # a re-send
                    top = tid  # the newest was implausible: start again from here
            if top is None or tid > top:
                top = tid
            kept.append(t)
        self.max_trade_id = top
        return kept

    def on_trades(self, trades: Iterable[Trade], now_us: int = 0) -> StepOutput:
        out = StepOutput()
        if not isinstance(trades, list):
            trades = list(trades)
        if trades:
            trades = self._plausible(trades, now_us, out)
        candles, late = self.windower.push(trades)
        if late:
            self.late_count += len(late)
            w = self.windower
            out.dead_letters.extend(late_dead_letter(t, w.emitted_until_us, w.lateness_us, now_us) for t in late)
        return self._candles(candles, out)

    def on_watermark(self, watermark_us: int) -> StepOutput:
        """Advance event time without trades (live sources: wall clock passes)."""
        return self._candles(self.windower.close_until(watermark_us), StepOutput())

    def on_eof(self) -> StepOutput:
        out = self._candles(self.windower.flush(), StepOutput())
        if self.learner is not None:  # the exact final figures (metrics rows are written every 12 labels)
            out.metrics.extend(self.learner.final_metrics())
        return out


def run_batch(
    trades: Iterable[Trade], window_seconds: int, lateness_seconds: float = 0.0, **pipeline_kw: Any
) -> StepOutput:
    """Batch driver: the same per-symbol pipelines as the stream, fed by a loop.

    Trades are processed in the given order (each symbol's order matters: it is
    the arrival order); every window is closed at the end, like a replay at EOF.

    The whole feature pipeline in a few lines — simulated trades of two symbols into
    10-s candles, features, and the online model's predictions and progressive metrics:

    >>> from tickcast.sim import MarketSimulator, SimParams
    >>> trades = MarketSimulator(["BTC/USD", "ETH/USD"], seed=7, params=SimParams(rate=5)).next_trades(20_000)
    >>> out = run_batch(trades, 10, online_model="linear", horizon_seconds=60)
    >>> len(out.candles), sum(c.trades for c in out.candles)  # every trade in exactly one candle
    (392, 20000)
    >>> online = [p for p in out.predictions if p.model_kind == "online:linear"]
    >>> len(out.features) == len(out.candles) == len(online)  # one row and online prediction per candle
    True
    >>> {p.model_kind for p in out.predictions} - {"online:linear"}  # what model=auto served (tickcast.scoreboard)
    {'auto:persistence'}
    >>> btc = {m.model_name: m for m in out.metrics if m.symbol == "BTC/USD"}  # newest per model
    >>> sorted(btc), {m.n for m in btc.values()}  # model and baselines, scored on the same labels
    (['mean_last_10', 'persistence', 'river-linear'], {190})
    >>> sum(m.model_name == "river-linear" for m in out.metrics if m.symbol == "BTC/USD")  # every 12 labels + final
    16
    """
    lat_us = int(round(lateness_seconds * 1_000_000))
    pipes: dict[str, SymbolPipeline] = {}
    out = StepOutput()
    for t in trades:
        p = pipes.get(t.symbol)
        if p is None:
            p = pipes[t.symbol] = SymbolPipeline(t.symbol, window_seconds, lat_us, **pipeline_kw)
        out.extend(p.on_trades((t,)))
    for p in pipes.values():
        out.extend(p.on_eof())
    return out
