"""Slipway: shared code for the CLI, the API client and the daemons."""

__version__ = "0.1.0"
