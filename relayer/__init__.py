"""The relayer service: watch, attest, assemble, fetch and deliver stages over the bus."""
