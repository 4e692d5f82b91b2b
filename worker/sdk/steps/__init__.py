"""The stages of a worker's task, one module each, sequenced by :class:`WorkerNode`.

A task goes register (once per node) -> train (download the round's inputs, run locally) ->
mask (secure rounds only) -> upload -> commit (or sign and offer, then record) -> publish, and
later answer (challenges on its transcript).
Each module holds one stage's work on a node, so each stage reads on its own; the node keeps the
order, the state file and the loop (:mod:`fedrelay.worker.sdk.node`).
"""
