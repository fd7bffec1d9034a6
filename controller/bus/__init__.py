"""NATS-backed parts: the build job/status bus, app log fan-in, API log lines."""
