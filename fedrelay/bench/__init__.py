"""Benchmarks behind `fedrelay bench ...`; each prints one JSON line of figures."""
