"""The narrow interfaces every retrieval engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One retrieved passage with its score (higher is better)."""

    id: str
    title: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k hits for each query, best first; one list per query, in query order."""
        ...

    def __len__(self) -> int:
        """Number of passages in the index."""
        ...


@runtime_checkable
class Encoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 array (len(texts), dim), L2-normalised rows."""
        ...
