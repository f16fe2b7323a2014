"""Feedback: event kinds, validation, rewards, ingestion and statistics."""
