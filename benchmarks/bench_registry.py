"""Registry costs of issue 12's hardening, each against a reference measured in the same run.

1. Signature check: Ed25519 verification of a real manifest vs the HMAC-SHA256 of the
   same bytes (what the registry did before), per document (the API verifies one
   alias per model refresh, every 2 s, and every document of /models, cached).
2. A full ``load`` of a small model (file store) vs the same bytes read + sha256 +
   unpickled without any check (the floor).
3. A planted 4 GB payload (sparse file) where a 75 kB one was signed: time and peak
   Python memory to refuse it, vs loading the genuine one.

    .venv/bin/python benchmarks/bench_registry.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    from models.registry import SnapshotRejected, _canonical, open_registry
    from models.signing import SigningKey

    work = Path(tempfile.mkdtemp(prefix="tickcast-regbench-"))
    key = SigningKey.generate()
    reg = open_registry(f"file://{work / 'models'}", signer=key)
    blob = {"weights": list(range(25_000))}  # ~75 kB pickled
    v = reg.save("m", blob, {"model_kind": "bench", "metrics": {"mae": 1.0}})
    raw = Path(reg._p("models", "m", f"{v}.json")).read_bytes()
    doc = json.loads(raw)
    sig = doc.pop("signature")
    body = _canonical(doc)
    n = 2000
    t_ed = timed(lambda: [key.public.verify(sig, body) for _ in range(n)]) / n
    mac_key = b"k" * 32
    t_hmac = timed(lambda: [hmac.compare_digest(hmac.new(mac_key, body, hashlib.sha256).hexdigest(), "0" * 64)
                            for _ in range(n)]) / n
    print(f"signature check per document: Ed25519 {t_ed * 1e6:.1f} us, HMAC-SHA256 {t_hmac * 1e6:.1f} us "
          f"(ratio {t_ed / t_hmac:.1f}x)")

    payload = Path(reg._p("models", "m", f"{v}.pkl"))
    m = 50
    t_load = timed(lambda: [reg.load("m", v) for _ in range(m)]) / m

    def floor() -> None:
        data = payload.read_bytes()
        hashlib.sha256(data).hexdigest()
        pickle.loads(data)  # noqa: S301 - our own bytes

    t_floor = timed(lambda: [floor() for _ in range(m)]) / m
    print(f"load of a {payload.stat().st_size / 1e3:.0f} kB model: {t_load * 1e3:.2f} ms; read+sha256+unpickle "
          f"alone {t_floor * 1e3:.2f} ms (ratio {t_load / t_floor:.2f}x)")

    with open(payload, "r+b") as f:
        f.truncate(4 << 30)  # sparse: no disk used
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        reg.load("m", v)
    except SnapshotRejected as e:
        kind = e.kind
    t_reject = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"planted 4 GB payload: refused ({kind}) in {t_reject * 1e3:.2f} ms, peak Python memory "
          f"{peak / 1e6:.2f} MB ({t_reject / t_load:.2f}x a genuine load)")


if __name__ == "__main__":
    main()
