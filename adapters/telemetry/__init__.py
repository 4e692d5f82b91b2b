"""Traces, metrics and health endpoints shared by every long-running process."""
