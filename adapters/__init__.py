"""Everything that talks to something outside the process: chains, Kafka, the ledger, blobs."""
