"""Helpers shared by the tests (importable as ``support`` from any test module)."""
