"""Writing replay files (CONTRACT §4: JSON Lines of Kraken WS v2 messages), the one home
of it: ``tickcast convert`` and ``tickcast backfill`` write trades with
:func:`write_trades`; the simulator (:func:`tickcast.sim.write_replay`) formats the
same lines with numpy, byte for byte (``tests/test_sim.py`` checks it), and writes them
with :func:`write_atomically` too. ``tickcast record`` writes the frames it received,
verbatim, as they arrive (a live session has no end to wait for).

>>> t = [Trade("BTC/USD", 1, 1_000_000, 10.0, 1.0, "buy", "limit"),
...      Trade("BTC/USD", 2, 1_000_000, 10.5, 2.0, "sell", "market"),
...      Trade("BTC/USD", 3, 2_000_000, 11.0, 1.0, "buy", "limit")]
>>> [len(orjson.loads(line)["data"]) for line in trade_lines(t)]
[2, 1]
>>> [len(orjson.loads(line)["data"]) for line in trade_lines(t, per_timestamp=False)]
[3]
>>> [len(orjson.loads(line)["data"]) for line in trade_lines(t, per_timestamp=False, max_per_message=2)]
[2, 1]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from tickcast.kraken import trades_to_message
from tickcast.schema import Trade


def trade_lines(trades: Iterable[Trade], *, per_timestamp: bool = True,
                max_per_message: int | None = None) -> Iterator[bytes]:
    """v2 trade ``update`` messages (without the newline), in the order of ``trades``.

    A message holds consecutive trades of one symbol — and, with ``per_timestamp``, of
    one timestamp (as Kraken sends the fills of one order) — and at most
    ``max_per_message`` of them when given."""
    if max_per_message is not None and max_per_message < 1:
        raise ValueError(f"max_per_message must be >= 1; got {max_per_message}")
    cap = max_per_message or 0
    group: list[Trade] = []
    for t in trades:
        if group and (t.symbol != group[0].symbol or (per_timestamp and t.ts_us != group[0].ts_us)
                      or len(group) == cap):
            yield orjson.dumps(trades_to_message(group))
            group = []
        group.append(t)
    if group:
        yield orjson.dumps(trades_to_message(group))


def write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` through ``<path>.tmp`` and a rename, so ``path``
    only ever holds a complete file (creates the parent directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
    os.replace(tmp, path)


def write_trades(path: Path, trades: Iterable[Trade], *, per_timestamp: bool = True,
                 max_per_message: int | None = None) -> int:
    """A replay file of ``trades`` (see :func:`trade_lines`), written atomically;
    returns the number of messages (lines)."""
    lines = 0

    def numbered() -> Iterator[bytes]:
        nonlocal lines
        for line in trade_lines(trades, per_timestamp=per_timestamp, max_per_message=max_per_message):
            lines += 1
            yield line + b"\n"

    write_atomically(path, numbered())
    return lines
