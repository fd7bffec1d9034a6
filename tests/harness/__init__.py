"""Fixtures' building blocks: real servers on free ports, and waiting helpers."""
