"""Offline training: load session datasets, learn item embeddings and co-visitation, write artifacts.

Submodules are imported lazily by callers (`training.pipeline.train`) so that importing the
package stays cheap for the streaming worker and the API.
"""
