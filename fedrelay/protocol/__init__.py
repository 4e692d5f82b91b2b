"""The protocol layer: what every fedrelay component agrees on, byte for byte.

Pure code, no I/O, importing nothing above it: the Wormhole VAA and payload codecs
(:mod:`fedrelay.protocol.wormhole`), hashing and blob naming, Merkle proofs, the secure-aggregation
messages (:mod:`fedrelay.protocol.secagg`), the coordinator API's schemas and request signing
(:mod:`fedrelay.protocol.api`), the job configuration schema and key-file formats. Each is defined
once here and checked by the shared test vectors.
"""
