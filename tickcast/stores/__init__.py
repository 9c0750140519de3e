"""tickcast's stores, behind small interfaces.

* :mod:`tickcast.stores.tables` — every offline table in one place (columns, key) and
  the converters to Arrow;
* :mod:`tickcast.stores.offline` — :class:`~tickcast.stores.offline.OfflineStore`:
  the embedded Parquet lake read with chdb, or a ClickHouse server;
* :mod:`tickcast.stores.online` — :class:`~tickcast.stores.online.OnlineStore`: the
  newest features and prediction per symbol in Redis/Valkey.

Importing this package imports nothing heavy; import the submodule you need.
"""
