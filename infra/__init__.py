"""Local infrastructure: start/stop/inspect Kafka and Redis (and the pid files of the worker and API)."""
