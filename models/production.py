"""The promoted production model of each symbol, for the feature flow's live scoreboard.

:class:`ProductionWatcher` polls the registry aliases (``production-<SYMBOL>``) from a
thread of its own every ``refresh_s`` seconds and loads a new version when an alias
moves; the flow calls it per feature row (``watcher(symbol)`` -> ``(name, version,
Predictor)`` or None), a dictionary lookup. A registry outage or a refused snapshot
keeps the model it has (logged); the flow never waits for the registry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class ProductionWatcher:
    def __init__(self, registry: Any, symbols: tuple[str, ...], refresh_s: float = 15.0) -> None:
        self.registry = registry
        self.symbols = symbols
        self.refresh_s = refresh_s
        self._models: dict[str, tuple[str, str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, symbol: str) -> tuple[str, str, Any] | None:
        return self._models.get(symbol)

    def poll(self) -> None:
        """Check every symbol's alias once (load what moved)."""
        from models.registry import production_alias

        for symbol in self.symbols:
            try:
                alias = self.registry.get_alias(production_alias(symbol))
                if alias is None:
                    self._models.pop(symbol, None)
                    continue
                cur = self._models.get(symbol)
                if cur is not None and cur[1] == alias["version"]:
                    continue
                predictor, manifest = self.registry.load(alias["name"], alias["version"])
                name = str(manifest.get("meta", {}).get("model", getattr(predictor, "name", alias["name"])))
                self._models[symbol] = (name, str(alias["version"]), predictor)
                log.info("live scoreboard: production model of %s is now %s@%s", symbol, name, alias["version"])
            except Exception as e:  # noqa: BLE001 - outage, refused snapshot: keep what we have
                log.warning("live scoreboard: production model of %s not refreshed: %s: %s",
                            symbol, type(e).__name__, e)

    def start(self) -> ProductionWatcher:
        """Poll once now (so a replay scores the production model from its first row), then
        from a daemon thread every ``refresh_s``."""
        if self._thread is None:
            self.poll()
            self._thread = threading.Thread(target=self._run, name="tickcast-production-watcher", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
