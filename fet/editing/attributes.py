"""The attribute library: CelebA's 40 attribute names, their synonyms, and text → edits (paper 3.3).

The paper maps text to an attribute direction "in conjunction with an attribute library". Here the
library is explicit and inspectable: each phrase maps to (attribute, sign); a clause's negation
("no", "remove", "without", "less", "glasses off") flips the sign; intensity words scale α. Words that name nothing
the library knows are returned as ``unknown``, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
ATTRIBUTE_INDEX = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}

# phrase → (attribute, sign). Besides these, every attribute's own name ("wavy hair", "5 o clock
# shadow") is a phrase with sign +1. Longest phrases match first.
SYNONYMS: dict[str, tuple[str, int]] = {
    "glasses": ("Eyeglasses", 1), "eyeglasses": ("Eyeglasses", 1), "spectacles": ("Eyeglasses", 1),
    "specs": ("Eyeglasses", 1),
    "smile": ("Smiling", 1), "smiling": ("Smiling", 1), "smiles": ("Smiling", 1), "happy": ("Smiling", 1),
    "grin": ("Smiling", 1), "sad": ("Smiling", -1), "frown": ("Smiling", -1), "serious": ("Smiling", -1),
    "open mouth": ("Mouth_Slightly_Open", 1), "mouth open": ("Mouth_Slightly_Open", 1),
    "closed mouth": ("Mouth_Slightly_Open", -1), "close mouth": ("Mouth_Slightly_Open", -1),
    "mouth closed": ("Mouth_Slightly_Open", -1), "shut mouth": ("Mouth_Slightly_Open", -1),
    "blond": ("Blond_Hair", 1), "blonde": ("Blond_Hair", 1), "blond hair": ("Blond_Hair", 1),
    "blonde hair": ("Blond_Hair", 1), "golden hair": ("Blond_Hair", 1),
    "black hair": ("Black_Hair", 1), "dark hair": ("Black_Hair", 1),
    "brown hair": ("Brown_Hair", 1), "brunette": ("Brown_Hair", 1),
    "gray hair": ("Gray_Hair", 1), "grey hair": ("Gray_Hair", 1), "grey": ("Gray_Hair", 1),
    "gray": ("Gray_Hair", 1), "white hair": ("Gray_Hair", 1), "silver hair": ("Gray_Hair", 1),
    "bald": ("Bald", 1), "hairless": ("Bald", 1), "fringe": ("Bangs", 1), "bangs": ("Bangs", 1),
    "beard": ("No_Beard", -1), "bearded": ("No_Beard", -1), "no beard": ("No_Beard", 1),
    "clean shaven": ("No_Beard", 1), "shaved": ("No_Beard", 1), "beardless": ("No_Beard", 1),
    "mustache": ("Mustache", 1), "moustache": ("Mustache", 1), "goatee": ("Goatee", 1),
    "stubble": ("5_o_Clock_Shadow", 1), "sideburns": ("Sideburns", 1),
    "hat": ("Wearing_Hat", 1), "cap": ("Wearing_Hat", 1),
    "lipstick": ("Wearing_Lipstick", 1), "red lips": ("Wearing_Lipstick", 1),
    "makeup": ("Heavy_Makeup", 1), "make up": ("Heavy_Makeup", 1),
    "earrings": ("Wearing_Earrings", 1), "necklace": ("Wearing_Necklace", 1),
    "necktie": ("Wearing_Necktie", 1), "tie": ("Wearing_Necktie", 1),
    "pale": ("Pale_Skin", 1), "pale skin": ("Pale_Skin", 1), "fair skin": ("Pale_Skin", 1),
    "tanned": ("Pale_Skin", -1), "rosy cheeks": ("Rosy_Cheeks", 1), "blush": ("Rosy_Cheeks", 1),
    "male": ("Male", 1), "man": ("Male", 1), "masculine": ("Male", 1), "boy": ("Male", 1),
    "female": ("Male", -1), "woman": ("Male", -1), "feminine": ("Male", -1), "girl": ("Male", -1),
    "young": ("Young", 1), "younger": ("Young", 1), "youthful": ("Young", 1),
    "old": ("Young", -1), "older": ("Young", -1), "elderly": ("Young", -1), "aged": ("Young", -1),
    "chubby": ("Chubby", 1), "fat": ("Chubby", 1), "thin": ("Chubby", -1), "slim": ("Chubby", -1),
    "double chin": ("Double_Chin", 1), "big nose": ("Big_Nose", 1), "pointy nose": ("Pointy_Nose", 1),
    "big lips": ("Big_Lips", 1), "full lips": ("Big_Lips", 1), "narrow eyes": ("Narrow_Eyes", 1),
    "squint": ("Narrow_Eyes", 1), "arched eyebrows": ("Arched_Eyebrows", 1),
    "bushy eyebrows": ("Bushy_Eyebrows", 1), "eye bags": ("Bags_Under_Eyes", 1),
    "wavy hair": ("Wavy_Hair", 1), "curly hair": ("Wavy_Hair", 1), "curly": ("Wavy_Hair", 1),
    "wavy": ("Wavy_Hair", 1), "straight hair": ("Straight_Hair", 1),
    "receding hairline": ("Receding_Hairline", 1), "blurry": ("Blurry", 1), "blurred": ("Blurry", 1),
    "sharp": ("Blurry", -1), "attractive": ("Attractive", 1), "beautiful": ("Attractive", 1),
    "high cheekbones": ("High_Cheekbones", 1), "oval face": ("Oval_Face", 1),
}  # fmt: skip

NEGATIONS = {"no", "not", "without", "remove", "removed", "less", "don't", "dont", "never", "take", "drop", "lose",
             "off", "away"}  # fmt: skip
SOFTER = {"slightly": 0.5, "little": 0.5, "bit": 0.5, "somewhat": 0.6, "mildly": 0.5}
STRONGER = {"very": 1.5, "much": 1.5, "really": 1.5, "more": 1.3, "lots": 1.5, "strongly": 1.5}
FILLER = {
    "add", "make", "give", "put", "turn", "into", "her", "him", "them", "his", "their", "the", "a", "an",
    "some", "with", "have", "has", "having", "please", "look", "looking", "be", "is", "are", "to", "and",
    "on", "wear", "wearing", "wears", "person", "face", "hair", "of", "it", "me", "this",
    "that", "become", "should", "s", "o", "clock", "get", "also", "plus", "so", "too", "let", "lets",
}  # fmt: skip
CLAUSE_SPLIT = re.compile(r"\s*(?:,|;|\band\b|\bbut\b|\bthen\b|\bplus\b|&|\.)\s*")


def _phrase(attribute: str) -> str:
    return attribute.lower().replace("_", " ")


@dataclass
class ParsedEdits:
    """Edits found in a text: {attribute: α}, the words that meant nothing, and what matched what."""

    edits: dict[str, float] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    matches: list[tuple[str, str, float]] = field(default_factory=list)  # (phrase, attribute, α)


# how an edit of α moves z_sem (fet.editing.edit): along the classifier's normal (paper Eq. 1), or by the
# attribute label model's predicted shift for the change of that one attribute (fet.editing.label_model)
EDIT_DIRECTIONS = ("classifier", "label_model")


class AttributeLibrary:
    """Maps attribute names and free text to (attribute, α) edits within a configured α range."""

    def __init__(self, default_alpha: float = 0.3, max_abs_alpha: float = 1.0, direction: str = "classifier") -> None:
        if not 0 < default_alpha <= max_abs_alpha:
            raise ValueError(f"default_alpha={default_alpha} must be in (0, max_abs_alpha={max_abs_alpha}]")
        if direction not in EDIT_DIRECTIONS:
            raise ValueError(f"direction={direction!r}: expected one of {list(EDIT_DIRECTIONS)}")
        self.default_alpha = default_alpha
        self.max_abs_alpha = max_abs_alpha
        self.direction = direction
        phrases = {_phrase(a): (a, 1) for a in CELEBA_ATTRIBUTES}
        phrases.update(SYNONYMS)
        self.phrases = phrases
        self._pattern = re.compile(
            r"\b(" + "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True)) + r")\b"
        )

    def settings(self) -> dict:
        """What ``attribute_library.json`` holds; ``AttributeLibrary(**settings)`` builds the same library."""
        return {"default_alpha": self.default_alpha, "max_abs_alpha": self.max_abs_alpha, "direction": self.direction}

    def resolve(self, name: str) -> str:
        """An attribute given as its CelebA name (any case) or a synonym → the CelebA name."""
        if name in ATTRIBUTE_INDEX:
            return name
        for attr in CELEBA_ATTRIBUTES:
            if attr.lower() == name.lower():
                return attr
        key = name.lower().replace("_", " ").strip()
        if key in self.phrases and self.phrases[key][1] == 1:
            return self.phrases[key][0]
        raise KeyError(f"unknown attribute {name!r}; expected one of the 40 CelebA names, e.g. Eyeglasses, Smiling")

    def check_alpha(self, attribute: str, alpha: float) -> None:
        if not abs(alpha) <= self.max_abs_alpha:
            raise ValueError(
                f"α={alpha} for {attribute}: expected a value in [-{self.max_abs_alpha}, {self.max_abs_alpha}]"
            )

    def normalize(self, edits: dict[str, float]) -> dict[str, float]:
        """{name or synonym: α} → {CelebA name: α}, validating names and the α range."""
        out: dict[str, float] = {}
        for name, alpha in edits.items():
            attr = self.resolve(name)
            self.check_alpha(attr, float(alpha))
            out[attr] = out.get(attr, 0.0) + float(alpha)
        return out

    def parse_spec(self, spec: str) -> dict[str, float]:
        """``"Eyeglasses=+1,Smiling=0.5"`` → {"Eyeglasses": 1.0, "Smiling": 0.5} (validated)."""
        edits: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            if "=" not in item:
                raise ValueError(f"edit {item!r}: expected Attribute=alpha, e.g. Eyeglasses=+0.5")
            name, raw = item.split("=", 1)
            try:
                self.resolve(name.strip())
            except KeyError as e:  # typed by a user: a ValueError, like every other bad edit
                raise ValueError(f"edit {item!r}: {e.args[0]}") from e
            try:
                edits[name.strip()] = float(raw)
            except ValueError as e:
                raise ValueError(f"edit {item!r}: α must be a number, got {raw!r}") from e
        return self.normalize(edits)

    def parse_text(self, text: str) -> ParsedEdits:
        """Free text → edits. "add glasses and make her smile, no beard" →
        {Eyeglasses: +α, Smiling: +α, No_Beard: +α}; "remove the hat" → {Wearing_Hat: −α}."""
        result = ParsedEdits()
        for raw in CLAUSE_SPLIT.split(text.lower().replace("-", " ").replace("_", " ").replace("'s", "")):
            clause = re.sub(r"[^a-z0-9' ]+", " ", raw).strip()
            if not clause:
                continue
            found = list(self._pattern.finditer(clause))
            words_outside = self._pattern.sub(" ", clause).split()
            negated = any(w in NEGATIONS for w in words_outside)
            scale = 1.0
            for w in words_outside:
                scale *= SOFTER.get(w, 1.0) * STRONGER.get(w, 1.0)
            for m in found:
                phrase = m.group(1)
                attr, sign = self.phrases[phrase]
                # "no beard" as a phrase already carries its sign; a clause negation flips the rest.
                sign = -sign if negated else sign
                alpha = max(-self.max_abs_alpha, min(self.max_abs_alpha, sign * scale * self.default_alpha))
                result.edits[attr] = alpha
                result.matches.append((phrase, attr, alpha))
            for w in words_outside:
                if w not in FILLER and w not in NEGATIONS and w not in SOFTER and w not in STRONGER:
                    result.unknown.append(w)
        return result

    def describe(self) -> list[dict]:
        """The library as data (for an API): each attribute with its synonyms and the α range."""
        by_attr: dict[str, list[str]] = {a: [] for a in CELEBA_ATTRIBUTES}
        for phrase, (attr, sign) in sorted(self.phrases.items()):
            by_attr[attr].append(phrase if sign > 0 else f"-{phrase}")
        return [
            {"name": a, "index": i, "synonyms": by_attr[a], "alpha_range": [-self.max_abs_alpha, self.max_abs_alpha]}
            for i, a in enumerate(CELEBA_ATTRIBUTES)
        ]
