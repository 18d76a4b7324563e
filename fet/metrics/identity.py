"""Temporal identity consistency, TL-ID and TG-ID (Tzaban et al., "Stitch it in Time", SIGGRAPH Asia 2022).

Per-frame identity embeddings are L2-normalised; S = E Eᵀ is the cosine-similarity matrix of a video's
frames. The edited (here: generated) video's matrix is divided element-wise by the source video's, so
the score is relative to how consistent the source itself is. TL-ID is the mean ratio over adjacent
frames (the first off-diagonal), TG-ID over all pairs of distinct frames. 1.0 means as consistent as
the source; lower means identity flickers (TL) or drifts (TG).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IdentityConsistency:
    tl_id: float
    tg_id: float
    frames: int  # frames with an embedding in both videos


def similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """(T, D) embeddings → (T, T) cosine similarities."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e @ e.T


def identity_consistency(source: np.ndarray, generated: np.ndarray) -> IdentityConsistency:
    """(T, D) per-frame embeddings of the source and the generated video (NaN rows: no face; dropped from
    both) → TL-ID, TG-ID. NaN when fewer than two frames have both."""
    s, g = np.asarray(source, np.float64), np.asarray(generated, np.float64)
    if s.shape != g.shape or s.ndim != 2:
        raise ValueError(f"identity consistency: expected two (T, D) arrays, got {s.shape} and {g.shape}")
    keep = np.isfinite(s).all(1) & np.isfinite(g).all(1)
    n = int(keep.sum())
    if n < 2:
        return IdentityConsistency(float("nan"), float("nan"), n)
    ratio = similarity_matrix(g[keep]) / similarity_matrix(s[keep])
    off_diagonal = ~np.eye(n, dtype=bool)
    return IdentityConsistency(float(np.diag(ratio, k=1).mean()), float(ratio[off_diagonal].mean()), n)
