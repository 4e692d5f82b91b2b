"""The coordinator service: rounds, aggregation, verification, scoring and settlement."""
