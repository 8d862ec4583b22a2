"""Load what the API serves from: the current model version (every artifact) and the online store."""

from __future__ import annotations

from candidates.bundle import ModelBundle
from serving.recommender import Recommender
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings


def load_recommender(settings: Settings, store: OnlineStore | None) -> Recommender:
    """The recommender for the model version CURRENT points at."""
    return Recommender(settings, store, ModelBundle.load_current(settings.models_dir))
