"""A round's phases, one module each, as the service drives them.

- :mod:`.assign`: POSTED and ASSIGNING, draw the workers and assign their tasks on chain;
- :mod:`.collect`: COLLECTING, close at the deadline;
- :mod:`.aggregate`: AGGREGATING, check updates, challenge and replay, aggregate, score,
  propose; :mod:`.unmask` recovers the sum of a secure round's masked inputs;
- :mod:`.settle`: PROPOSED, settle once the challenge window is over.

:mod:`.context` holds what they share. The loop, the chain events and the dispatch stay in
:mod:`fedrelay.coordinator.service`.
"""
