"""The Solana side of fedrelay: the worker program's layouts, PDAs, instructions and client.

- :mod:`~adapters.solana.layout`: instruction tags, error codes, account decoders.
- :mod:`~adapters.solana.pda`: program-derived addresses.
- :mod:`~adapters.solana.instructions`: instruction builders (pure).
- :mod:`~adapters.solana.client`: `WorkerProgramClient` over solana-py's `AsyncClient`.
- :mod:`~adapters.solana.devnet`: a JSON-RPC server over LiteSVM for local runs and tests.
- :mod:`~adapters.solana.program`: building and loading the program binary.
"""
