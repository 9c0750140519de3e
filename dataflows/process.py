"""Process-wide settings of a flow process (``python -m bytewax.run dataflows.<flow>``)."""

from __future__ import annotations

import gc

#: Cyclic-GC thresholds of a flow process (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)


def relax_gc() -> None:
    """Collect cyclic garbage less often, and never re-scan what start-up built.

    A flow allocates millions of short-lived objects (trades, rows, records) that die by
    reference counting; with CPython's default a young-generation collection runs every
    700 net allocations and, with the learner's and scoreboard's state alive, those scans
    took a large share of a thin-market replay and evicted the caches the real work uses.
    Measured on ``benchmarks/bench_pipeline.py``'s thin replay (600k trades, 60k candles,
    whole process, CPU): learning on 14.4 -> 11.0 s (GC itself 1.64 -> 0.19 s), learning
    off 7.7 -> 6.5 s. Cycles are still collected, ~70x less often; the flow's state has
    few of them, so memory stays flat (the replay's peak RSS is unchanged)."""
    gc.freeze()  # modules, classes and settings loaded so far: out of every future scan
    gc.set_threshold(*GC_THRESHOLDS)
