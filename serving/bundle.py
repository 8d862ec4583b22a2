"""Load what the API serves from: a model version (every artifact) and the online store."""

from __future__ import annotations

from candidates.bundle import ModelBundle
from serving.recommender import Recommender
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings


def load_recommender(settings: Settings, store: OnlineStore | None, version: str | None = None) -> Recommender:
    """The recommender for `version` (default: the one CURRENT points at)."""
    if version is None:
        return Recommender(settings, store, ModelBundle.load_current(settings.models_dir))
    return Recommender(settings, store, ModelBundle.load(settings.models_dir / version))
