"""Linear attribute editing of the semantic code (paper Eq. 1, in DiffAE's normalised form).

    z' = denorm( norm(z) + Σ_a α_a · √d · unit(w_a) )

With z normalised to unit variance per dimension, ‖norm(z)‖ ≈ √d, so α is a step measured in units of
the code's own length: α = 0.3 moves the code by 30 % of its norm along the attribute direction.
"""

from __future__ import annotations

import math

import torch

from fet.editing.attributes import AttributeLibrary, ParsedEdits
from fet.editing.classifier import AttributeClassifier


def edit_semantic(
    z_sem: torch.Tensor,
    classifier: AttributeClassifier,
    edits: dict[str, float],
    library: AttributeLibrary | None = None,
) -> torch.Tensor:
    """z_sem (B, d) and {attribute: α} → edited z_sem (B, d). Names/α are validated by the library."""
    if z_sem.ndim != 2 or z_sem.shape[1] != classifier.z_dim:
        raise ValueError(f"z_sem: expected (B, {classifier.z_dim}), got {tuple(z_sem.shape)}")
    edits = (library or AttributeLibrary()).normalize(edits)
    if not edits:
        return z_sem
    z = classifier.normalize(z_sem)
    scale = math.sqrt(classifier.z_dim)
    for attribute, alpha in edits.items():
        z = z + alpha * scale * classifier.direction(attribute).to(z)
    return classifier.denormalize(z)


def parse_edits(
    library: AttributeLibrary,
    classifier: AttributeClassifier,
    edits: dict[str, float] | None = None,
    text: str | None = None,
) -> ParsedEdits:
    """Explicit {attribute: α} and/or free text → validated edits (explicit values win on conflicts).

    Every α is checked against the library's range and every attribute must have a trained classifier.
    """
    parsed = library.parse_text(text) if text else ParsedEdits()
    if edits:
        parsed.edits.update(library.normalize(edits))
    for attr, alpha in parsed.edits.items():
        library.check_alpha(attr, alpha)
        classifier.direction(attr)  # raises for attributes without a trained classifier
    return parsed
