"""The serving role: the FastAPI app answering /recommend, /events, /health and /metrics."""
