"""Linear attribute editing of the semantic code (paper Eq. 1, in DiffAE's normalised form).

    z' = denorm( norm(z) + Σ_a α_a · √d · unit(w_a) )

With z normalised to unit variance per dimension, ‖norm(z)‖ ≈ √d, so α is a step measured in units of
the code's own length: α = 0.3 moves the code by 30 % of its norm along the attribute direction.

A library whose direction is ``label_model`` moves the code instead by what the attribute label model
(``fet.editing.label_model``) predicts for the change of that attribute alone, scaled by |α|.
"""

from __future__ import annotations

import math

import torch

from fet.editing.attributes import AttributeLibrary, ParsedEdits
from fet.editing.classifier import AttributeClassifier
from fet.editing.implications import implied_labels


def edit_semantic(
    z_sem: torch.Tensor,
    classifier: AttributeClassifier,
    edits: dict[str, float],
    library: AttributeLibrary | None = None,
) -> torch.Tensor:
    """z_sem (B, d) and {attribute: α} → edited z_sem (B, d). Names/α are validated by the library."""
    if z_sem.ndim != 2 or z_sem.shape[1] != classifier.z_dim:
        raise ValueError(f"z_sem: expected (B, {classifier.z_dim}), got {tuple(z_sem.shape)}")
    library = library or AttributeLibrary()
    edits = library.normalize(edits)
    if not edits:
        return z_sem
    if library.direction == "label_model":
        step = label_model_step(z_sem, classifier, edits)
    else:
        scale = math.sqrt(classifier.z_dim)
        step = sum(alpha * scale * classifier.direction(a).to(z_sem.device) for a, alpha in edits.items())
    # the step is in normalised units: in z_sem's own it is scaled by the spread, and added to z_sem itself
    # rather than through normalise → denormalise, so a face the edit leaves alone comes back bit for bit
    return z_sem + step * classifier.z_std


def label_model_step(z_sem: torch.Tensor, classifier: AttributeClassifier, edits: dict[str, float]) -> torch.Tensor:
    """The change of normalised z_sem (B, d) for {attribute: α} by the classifier's label model.

    Each face's labels are what its classifiers read; an edit with α > 0 turns the attribute on (and what
    that implies off: ``fet.editing.implications``), α < 0 turns it off, and |α| scales the predicted
    shift, so α = 1 moves the code to where the model puts faces with the edited labels. An attribute the
    face already has (or lacks, for α < 0) gives no shift.
    """
    model = classifier.label_model
    if model is None or not bool(model.fitted):
        raise ValueError(
            "edit direction 'label_model' needs an attribute classifier with a fitted label model "
            "(written by stage 2 since the label model was added); set the library's direction to 'classifier'"
        )
    labels = classifier.labels(z_sem)
    step = torch.zeros(z_sem.shape[0], classifier.z_dim, dtype=model.weight.dtype, device=z_sem.device)
    for attribute, alpha in edits.items():
        classifier.direction(attribute)  # raises for attributes without a trained classifier
        after = implied_labels(labels, attribute, on=alpha > 0)
        step = step + abs(alpha) * model.shift(labels, after)
        labels = after
    return step.to(z_sem.dtype)


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
    if text and not parsed.edits:  # not the unedited face, as if the request had been understood
        raise ValueError(f"text: no known attribute in {text!r}; expected phrases such as 'add glasses' or "
                         "'blond hair' (each attribute's synonyms are in the attribute library)")  # fmt: skip
    if edits:
        parsed.edits.update(library.normalize(edits))
    for attr, alpha in parsed.edits.items():
        library.check_alpha(attr, alpha)
        classifier.direction(attr)  # raises for attributes without a trained classifier
    return parsed
