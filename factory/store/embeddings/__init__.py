"""Versioned embedding collections on Lance: digests, tags and aliases, tuned vector indexes."""

from factory.store.embeddings._collections import (
    EXACT_BELOW,
    EmbeddingStore,
    EmbeddingVersion,
    Encoder,
    EncoderRef,
    HashingEncoder,
    IndexInfo,
    SearchHits,
    SentenceEncoder,
)
from factory.store.embeddings._encoders import encoder_for

__all__ = [
    "EXACT_BELOW",
    "EmbeddingStore",
    "EmbeddingVersion",
    "Encoder",
    "EncoderRef",
    "HashingEncoder",
    "IndexInfo",
    "SearchHits",
    "SentenceEncoder",
    "encoder_for",
]
