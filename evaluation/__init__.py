"""Offline evaluation of a model version as the API serves it, against baselines (`streamrec evaluate`)."""
