"""The relayer's stages, in pipeline order: each turns one kind of record into the next.

- :mod:`~fedrelay.relayer.stages.watch`: messages emitted on a source chain -> observations;
- :mod:`~fedrelay.relayer.stages.attest`: observations -> one devnet guardian's signatures;
- :mod:`~fedrelay.relayer.stages.assemble`: signatures -> quorum VAAs (or, instead of attest and
  assemble, :mod:`~fedrelay.relayer.stages.fetch`: observations -> VAAs from the guardian API);
- :mod:`~fedrelay.relayer.stages.route`: VAAs -> delivery requests, one topic per destination;
- :mod:`~fedrelay.relayer.stages.deliver`: delivery requests -> transactions on the destination.

Stages speak only ports (the bus, the chains, the ledger); :mod:`fedrelay.relayer.process` wires
them to adapters, and :mod:`fedrelay.relayer.stage` runs the consuming ones.
"""
