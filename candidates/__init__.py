"""Candidate generation: the FAISS item index and the co-visitation / popularity fallbacks."""
