"""Command groups of the `fedrelay` CLI, one module each."""
