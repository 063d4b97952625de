"""The embedding model in a child process of its own, for the app's background worker.

Importing torch and sentence-transformers takes seconds of CPU, most of it holding the GIL, and a
forward pass keeps every core busy: inside the app's process both slowed every page request of every
session. The child loads the model once, runs at a lower CPU priority, and encodes what it is sent
over a pipe:

    request  4-byte length, then the texts as a JSON list (UTF-8)
    reply    4-byte row count and 4-byte dimension, then the normalised float32 rows;
             or the row count 0xFFFFFFFF, a 4-byte length and the error message (UTF-8)

The child says ``READY`` once its model is loaded and ends when its input closes (the app's process
closed it or ended).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, BinaryIO

import numpy as np

from flywheel.config import PROJECT_ROOT
from flywheel.errors import EmbeddingError
from flywheel.vectors.model import encode, load_model

READY = b"READY\n"
FAILED = 0xFFFFFFFF
NICENESS = 10  # below the app's requests
CHUNK = 32  # texts per request, so a request of a page waits at most one chunk of the worker's


class ModelProcess:
    """A child process holding the embedding model; ``encode`` may be called from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child (if it is not running) and wait until its model is loaded."""
        with self._lock:
            self._running()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 embeddings of ``texts``, one row each, encoded by the child."""
        parts = [self._encode(list(texts[i : i + CHUNK])) for i in range(0, len(texts), CHUNK)]
        return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def close(self) -> None:
        """End the child: it finishes the batch it is encoding, if any, and exits."""
        with self._lock:
            self._end()

    def _encode(self, texts: list[str]) -> np.ndarray:
        payload = json.dumps(texts).encode("utf-8", "surrogatepass")
        with self._lock:
            child = self._running()
            stdin, stdout = child.stdin, child.stdout
            assert stdin is not None and stdout is not None  # the child runs with both pipes
            try:
                stdin.write(struct.pack("<I", len(payload)) + payload)
                stdin.flush()
                rows, size = struct.unpack("<II", _read(stdout, 8))
                if rows == FAILED:
                    message = _read(stdout, size).decode()
                    raise EmbeddingError(f"the embedding process failed: {message}")
                data = _read(stdout, rows * size * 4)
            except OSError as error:
                self._end()
                raise EmbeddingError(f"the embedding process stopped: {error}") from None
        return np.frombuffer(data, dtype=np.float32).reshape(rows, size)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        command = [sys.executable, "-m", "flywheel.vectors.model_process"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self._child = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._child.stdout is not None  # opened as a pipe just above
        try:
            ready = _read(self._child.stdout, len(READY))
        except OSError:
            ready = b""
        if ready != READY:
            self._end()
            raise EmbeddingError("the embedding process could not load the model; see the server log")
        return self._child

    def _end(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            assert child.stdin is not None  # the child runs with both pipes
            with contextlib.suppress(OSError):
                child.stdin.close()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _read(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise OSError(f"the stream ended after {len(data)} of {size} bytes")
    return data


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: load the model, say READY, then answer requests until ``requests`` ends."""

    load_model()
    replies.write(READY)
    replies.flush()
    while header := requests.read(4):
        (size,) = struct.unpack("<I", header)
        texts = json.loads(_read(requests, size).decode("utf-8", "surrogatepass"))
        try:
            vectors = encode(texts) if texts else np.zeros((0, 0), dtype=np.float32)
            reply = struct.pack("<II", *vectors.shape) + vectors.tobytes()
        except Exception as error:  # the parent raises it; this loop goes on
            message = f"{type(error).__name__}: {error}".encode("utf-8", "replace")
            reply = struct.pack("<II", FAILED, len(message)) + message
        replies.write(reply)
        replies.flush()


def main() -> None:
    """Entry point of the child: replies on the real stdout; anything else printed goes to stderr."""
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
