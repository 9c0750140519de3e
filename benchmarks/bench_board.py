"""The live scoreboard's cost per candle (tickcast.scoreboard.LiveBoard), in process.

Feature rows and online predictions of a thin simulated market (5-s candles, ~10 trades
each, 60-s horizon) are made once by the per-symbol pipeline; then only the scoreboard
is timed (process CPU time, best of ``--repeat``), three ways on the same rows:

* **reference**: the row-by-row code before the block version (kept in
  ``tests/board_reference.py``), one ``on_row`` per candle — what the flow paid;
* **1 row/call**: ``on_rows`` with one row per call (a live flow: one candle per step);
* **blocks**: ``on_rows`` with the rows of a call at once, ``--block`` rows per call (a
  replay hands over ~60-70 rows per call per symbol).

Two cases: online model + persistence (the default flow), and the hard case with a
promoted production model too (three candidates; its ``predict_price`` is a trivial
function here, so the figures are the scoreboard's own work). The outputs of all three
ways are checked equal before anything is printed (bitwise between the block sizes, to
1e-12 against the reference).

    python benchmarks/bench_board.py               # ~1 min
    python benchmarks/bench_board.py --hours 2 --repeat 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO

from tests.board_reference import LiveBoard as RefBoard
from tickcast.live_eval import drive_symbol
from tickcast.scoreboard import LiveBoard
from tickcast.sim import DEFAULT_START_US, MarketSimulator, SimParams

W, H = 5, 60


class TiltModel:
    """A promoted model's predict_price at almost no cost (the board is what is timed)."""

    feature_set_version = f"fs1-w{W}s"

    def predict_price(self, close: float, values: dict[str, float]) -> list[float]:
        x = values.get("ret_1", 0.0)
        return [close * (1 + 0.5 * x) if x == x else math.nan]


def stream(hours: float, seed: int) -> tuple[list[Any], list[Any]]:
    trades = MarketSimulator(["BTC/USD"], seed=seed, params=SimParams(rate=2.0, flow_impact=0.3)).until(
        DEFAULT_START_US + int(hours * 3600e6))
    out, _ = drive_symbol(trades, window_seconds=W, horizon_seconds=H)
    online = {p.ts_us: p for p in out.predictions if p.model_kind.startswith("online")}
    return out.features, [online.get(r.ts_us) for r in out.features]


def feed(board: Any, rows: list[Any], online: list[Any], prod: Any, block: int) -> tuple[float, list[Any]]:
    """CPU seconds of the whole stream through ``board`` and its outputs."""
    outs: list[Any] = []
    t0 = time.process_time()
    if block == 0:  # the reference, row by row
        for r, o in zip(rows, online, strict=True):
            outs.append(board.on_row(r, o, prod))
    else:
        for i in range(0, len(rows), block):
            outs.append(board.on_rows(rows[i:i + block], online[i:i + block], prod))
    dt = time.process_time() - t0
    preds = []
    for o in outs:
        preds.extend(o.predictions)
        preds.extend([o.online] if block == 0 else o.online)
    return dt, sorted((p for p in preds if p is not None), key=lambda p: (p.ts_us, p.model_kind))


def same(a: list[Any], b: list[Any], rel: float) -> bool:
    def eq(x: Any, y: Any) -> bool:
        if isinstance(x, float):
            return x == y or (x != x and y != y) or abs(x - y) <= rel * max(abs(x), abs(y))
        return bool(x == y)
    return len(a) == len(b) and all(eq(x, y) for p, q in zip(a, b, strict=True) for x, y in zip(p, q, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=6.0, help="hours of simulated market (5-s candles)")
    ap.add_argument("--block", type=int, default=64, help="rows per on_rows call in the block case")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    args = ap.parse_args(argv)
    rows, online = stream(args.hours, seed=11)
    print(f"{len(rows)} rows (5-s candles, horizon {H} s), thin market (2 trades/s); "
          "CPU µs per row, best of {args.repeat} interleaved runs; the machine may be shared: the ratios within a line "
          "are what count".replace("{args.repeat}", str(args.repeat)))
    for case, prod in (("online + persistence", None), ("+ production model (hard)", ("tilt", "v1", TiltModel()))):
        res: dict[str, tuple[float, list[Any]]] = {}
        for _ in range(args.repeat):  # the ways interleaved, so a change of load hits them alike
            for way, cls, block in (("reference", RefBoard, 0), ("1 row/call", LiveBoard, 1),
                                    (f"blocks of {args.block}", LiveBoard, args.block)):
                dt, preds = feed(cls("BTC/USD", H), rows, online, prod, block)
                us = dt / len(rows) * 1e6
                if way not in res or us < res[way][0]:
                    res[way] = (us, preds)
        ways = list(res)
        assert same(res[ways[1]][1], res[ways[2]][1], 0.0), "block outputs differ from 1-row calls"
        assert same(res[ways[0]][1], res[ways[1]][1], 1e-12), "outputs differ from the reference"
        ref = res["reference"][0]
        print(f"{case:<27} " + " | ".join(f"{w} {us:6.1f} µs ({ref / us:4.1f}x)" for w, (us, _) in res.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _ = REPO
    raise SystemExit(main())
