"""Embedding serving: search, select and embeddings over a catalog index per version, with
calibration and instant adaptation (state.py for the caches, service.py for the request
path). The version routing, interaction logging and model loading it stands on are shared
(fineloop.serving)."""
