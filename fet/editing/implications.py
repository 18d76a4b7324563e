"""What turning one CelebA attribute on or off implies for the others.

A face has one hair colour at most, no hair colour when bald, and "No_Beard" is the absence of every
kind of facial hair. So an edit to blond hair must also turn the face's brown hair off, and a check that
the other attributes were kept must expect that. CelebA's labels follow these rules almost everywhere,
and SynthTalk draws its identities by them.
"""

from __future__ import annotations

import torch

from fet.editing.attributes import ATTRIBUTE_INDEX

HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
FACIAL_HAIR = ("Mustache", "Goatee")

# attribute turned on → attributes that must then be off
TURNS_OFF: dict[str, tuple[str, ...]] = {
    **{colour: (*(c for c in HAIR_COLOURS if c != colour), "Bald") for colour in HAIR_COLOURS},
    "Bald": (*HAIR_COLOURS, "Bangs"),
    "No_Beard": FACIAL_HAIR,
    **{kind: ("No_Beard",) for kind in FACIAL_HAIR},
}


def implied_labels(labels: torch.Tensor, attribute: str, on: bool = True) -> torch.Tensor:
    """Boolean labels (B, 40) → the labels after setting ``attribute`` on or off, with what that implies.

    Turning an attribute off implies nothing else: which hair colour replaces a removed one is not
    determined, and a face without its moustache may still have a full beard.
    """
    if labels.ndim != 2 or labels.shape[1] != len(ATTRIBUTE_INDEX):
        raise ValueError(f"labels: expected (B, {len(ATTRIBUTE_INDEX)}) booleans, got {tuple(labels.shape)}")
    if attribute not in ATTRIBUTE_INDEX:
        raise KeyError(f"unknown attribute {attribute!r}; expected a CelebA attribute name")
    out = labels.clone().bool()
    out[:, ATTRIBUTE_INDEX[attribute]] = on
    if on:
        for other in TURNS_OFF.get(attribute, ()):
            out[:, ATTRIBUTE_INDEX[other]] = False
    return out
