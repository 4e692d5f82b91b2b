"""The ports layer: the interfaces services need from the outside world.

Protocols and the plain values that cross them, nothing else: source and destination chains for
the relayer (:mod:`~fedrelay.ports.relay`), the coordinator chain and the worker chain, the
message bus, the ledger repositories, the blob store and the clock. Adapters
(:mod:`fedrelay.adapters`) implement them; services depend on them and meet an adapter only in
their composition root.
"""
