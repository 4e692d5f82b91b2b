"""The Solana side of fedrelay: the worker program's layouts, PDAs, instructions and client.

- :mod:`~fedrelay.adapters.solana.layout`: instruction tags, error codes, account decoders.
- :mod:`~fedrelay.adapters.solana.pda`: program-derived addresses.
- :mod:`~fedrelay.adapters.solana.instructions`: instruction builders (pure).
- :mod:`~fedrelay.adapters.solana.client`: `WorkerProgramClient` over solana-py's `AsyncClient`.
- :mod:`~fedrelay.adapters.devnet.solana_rpc`: a JSON-RPC server over LiteSVM for local runs and
tests.
- :mod:`~fedrelay.adapters.solana.program`: building and loading the program binary.
"""
