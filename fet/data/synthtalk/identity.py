"""SynthTalk identities: continuous shape/colour parameters and CelebA-named attributes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fet.editing.attributes import ATTRIBUTE_INDEX

# The attributes SynthTalk draws (each with a consistent visual cue); the other CelebA labels are -1.
MODELLED = (
    "Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair",
    "Bald", "Bangs", "No_Beard", "Mustache", "Goatee", "Wearing_Hat", "Wearing_Lipstick", "Pale_Skin", "Male",
)  # fmt: skip
PALE_SKIN = (250, 234, 226)
HAIR_COLOURS = {  # RGB
    "Black_Hair": (28, 24, 22),
    "Blond_Hair": (226, 190, 110),
    "Brown_Hair": (110, 66, 36),
    "Gray_Hair": (170, 170, 172),
}


@dataclass(frozen=True)
class Identity:
    face_width: float = 1.0  # x scale of the mesh
    face_height: float = 1.0  # y scale
    eye_spacing: float = 0.0  # cm added to each eye's distance from the midline
    nose_size: float = 1.0
    lip_size: float = 1.0
    skin: tuple[int, int, int] = (214, 168, 135)
    iris: tuple[int, int, int] = (70, 90, 60)
    lip: tuple[int, int, int] = (170, 90, 90)
    brow_darkness: float = 0.35  # eyebrow colour = skin × this
    background: tuple[int, int, int] = (90, 110, 140)
    clothes: tuple[int, int, int] = (50, 60, 90)
    hat: tuple[int, int, int] = (150, 40, 40)
    attributes: dict[str, bool] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return bool(self.attributes.get(name, False))

    @property
    def hair_colour(self) -> tuple[int, int, int]:
        for name, rgb in HAIR_COLOURS.items():
            if self.has(name):
                return rgb
        return HAIR_COLOURS["Brown_Hair"]

    @property
    def skin_rgb(self) -> tuple[int, int, int]:
        return PALE_SKIN if self.has("Pale_Skin") else self.skin

    def with_attributes(self, **changes: bool) -> Identity:
        """A copy with attributes set, keeping the labels consistent: one hair colour at most, no hair
        colour when bald, No_Beard tied to the facial-hair attributes."""
        attrs = dict(self.attributes)
        for name, on in changes.items():
            if name in HAIR_COLOURS and on:
                attrs.update({h: False for h in HAIR_COLOURS}, Bald=False)
            if name == "Bald" and on:
                attrs.update({h: False for h in HAIR_COLOURS}, Bangs=False)
            if name == "No_Beard":
                attrs["_full_beard"] = not on
                if on:
                    attrs.update(Mustache=False, Goatee=False)
            attrs[name] = on
        attrs["No_Beard"] = not (attrs.get("_full_beard") or attrs.get("Mustache") or attrs.get("Goatee"))
        return replace(self, attributes=attrs)

    def labels(self) -> np.ndarray:
        """int8[40] in CelebA order: 1/0 for modelled attributes, -1 elsewhere."""
        out = np.full(40, -1, np.int8)
        for name in MODELLED:
            out[ATTRIBUTE_INDEX[name]] = 1 if self.has(name) else 0
        return out


def _colour(rng: np.random.Generator, base, spread: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0, spread), 0, 255)) for c in base)


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random identity with attributes drawn at rates that keep every label well represented."""
    male = rng.random() < 0.5
    bald = male and rng.random() < 0.15
    hair = None if bald else str(rng.choice(list(HAIR_COLOURS)))
    beard = male and rng.random() < 0.3
    attrs = {
        "Male": male,
        "Bald": bald,
        "Bangs": (not bald) and rng.random() < 0.3,
        "Eyeglasses": rng.random() < 0.35,
        "Smiling": rng.random() < 0.45,
        "Mouth_Slightly_Open": rng.random() < 0.4,
        "Mustache": male and not beard and rng.random() < 0.3,
        "Goatee": male and not beard and rng.random() < 0.3,
        "Wearing_Hat": rng.random() < 0.2,
        "Wearing_Lipstick": (not male) and rng.random() < 0.5,
        "Pale_Skin": rng.random() < 0.2,
    }
    if hair:
        attrs[hair] = True
    attrs["No_Beard"] = not (beard or attrs["Mustache"] or attrs["Goatee"])
    attrs["_full_beard"] = beard
    tone = rng.uniform(0, 1)
    skin = np.array([236, 196, 170]) * (1 - tone) + np.array([120, 78, 52]) * tone
    return Identity(
        face_width=rng.uniform(0.9, 1.1) * (1.05 if male else 0.97),
        face_height=rng.uniform(0.92, 1.08),
        eye_spacing=rng.uniform(-0.35, 0.35),
        nose_size=rng.uniform(0.8, 1.25),
        lip_size=rng.uniform(0.8, 1.2),
        skin=_colour(rng, skin, 6),
        iris=_colour(rng, (70, 80, 70), 30),
        lip=_colour(rng, (175, 95, 95), 12),
        brow_darkness=rng.uniform(0.2, 0.45),
        background=_colour(rng, (120, 130, 140), 45),
        clothes=_colour(rng, (70, 70, 90), 40),
        hat=_colour(rng, (120, 60, 60), 50),
        attributes=attrs,
    )
