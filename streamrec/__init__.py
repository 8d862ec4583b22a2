"""streamrec: real-time, session-aware recommendations on Kafka, Redis and Feast."""

__version__ = "0.1.0"
