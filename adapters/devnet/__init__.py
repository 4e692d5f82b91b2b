"""Local chains and services for development and tests.

`fedrelay.adapters.devnet.services` starts real processes (anvil, PostgreSQL, Apache Kafka) on free
loopback ports in temporary directories and stops them again; `fedrelay.adapters.devnet.forge`
drives
Foundry's forge over solcjs. Tests and `fedrelay devnet` share this code.
"""
