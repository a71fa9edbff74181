"""Retrieval quality: protocols, methods and baselines, metrics, reports."""
