"""Embedding, the Annoy index, localisation and search: what a user runs."""
