"""Vectors: the embedding model, its process, and one cache of embeddings of approved text."""
