"""Load what the API serves from: the current model version, its FAISS index, the online store."""

from __future__ import annotations

from candidates.index import CandidateIndex
from serving.recommender import Recommender
from streamrec.artifacts import load_current
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings


def load_recommender(settings: Settings, store: OnlineStore | None) -> Recommender:
    """The recommender for the model version CURRENT points at (index from the same folder)."""
    model = load_current(settings.models_dir)
    index = CandidateIndex.load(model.path)
    index_version = f"{model.version}:{index.info.get('type', 'unknown')}"  # built with the model
    return Recommender(settings, store, model, index, index_version=index_version)
