"""In-process simulations of federated rounds (training, aggregation, secure aggregation).

Used by the benchmarks and the tests to study aggregation rules and secure sums without chains or
an API; nothing in the running coordinator calls them.
"""
