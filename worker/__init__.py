"""The worker SDK and trainer that a GPU owner runs."""
