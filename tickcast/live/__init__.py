"""Live ingestion from Kraken: the WebSocket v2 client with REST gap fill
(:mod:`tickcast.live.kraken_client`) and the ``record`` / ``backfill`` commands
(:mod:`tickcast.live.commands`). Framework-free: no Bytewax, no Flask."""
