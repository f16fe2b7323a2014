"""Serving: search, select, calibration, instant adaptation, the OpenAI embeddings route."""
