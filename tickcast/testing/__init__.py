"""Stand-ins for what tests and benchmarks cannot reach: :mod:`tickcast.testing.fake_kraken`
(a WebSocket v2 + REST Kraken on loopback ports). Nothing in the running system imports
this package."""
