"""Image feature-space editing (paper 3.3, Fig. 2a): encode → edit z_sem → render with the same x_T."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from PIL import Image

from fet import storage
from fet.autoencoder import DiffusionAutoencoder
from fet.checkpoint import load_weights, read_component_config, save_component
from fet.editing.attributes import CELEBA_ATTRIBUTES, AttributeLibrary, ParsedEdits
from fet.editing.classifier import AttributeClassifier
from fet.editing.edit import edit_semantic, parse_edits
from fet.editing.interpolate import lerp, slerp
from fet.images import center_square, load_image, to_pil, to_tensor
from fet.lineage import check_lineage, read_lineage


def load_attribute_classifier(directory: str) -> AttributeClassifier:
    cfg = read_component_config(directory, "attribute_classifier", "attribute_classifier")
    model = AttributeClassifier(int(cfg["z_dim"]), label_model=bool(cfg.get("label_model", False)))
    return load_weights(directory, "attribute_classifier", model).eval()


def save_attribute_model(directory: str, classifier: AttributeClassifier, library: AttributeLibrary) -> None:
    """Write the classifier component and ``attribute_library.json`` (what stage 2 produces)."""
    config = {
        "z_dim": classifier.z_dim,
        "attributes": list(CELEBA_ATTRIBUTES),
        "label_model": classifier.label_model is not None,
    }
    save_component(directory, "attribute_classifier", classifier, "attribute_classifier", config)
    storage.write_text(storage.join(directory, "attribute_library.json"), json.dumps(library.settings(), indent=2))


def load_attribute_library(directory: str) -> AttributeLibrary:
    path = storage.join(directory, "attribute_library.json")
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: missing; expected the attribute library written by stage 2")
    return AttributeLibrary(**json.loads(storage.read_text(path)))


@dataclass
class EncodedFace:
    """A face in the model's two codes; keep it to edit the same face many times cheaply."""

    z_sem: torch.Tensor  # (1, z_dim)
    x_T: torch.Tensor  # (1, C, h, w)
    image: torch.Tensor  # (1, 3, H, W) the aligned input


class FaceEditor:
    """Edit attributes of face images with a trained autoencoder + attribute classifier."""

    def __init__(self, model: DiffusionAutoencoder, classifier: AttributeClassifier, library: AttributeLibrary) -> None:
        if classifier.z_dim != model.cfg.z_dim:
            raise ValueError(
                f"classifier z_dim={classifier.z_dim} does not match the autoencoder's z_dim={model.cfg.z_dim}"
            )
        self.model, self.classifier, self.library = model.eval(), classifier.eval(), library

    @classmethod
    def load(cls, directory: str, classifier_dir: str | None = None) -> FaceEditor:
        """Autoencoder from ``directory``; classifier and library from ``classifier_dir`` (default: same).
        ``directory`` may also be stage 2's output alone, as the Ray training jobs write it (each stage to its
        own ``out``): its ``lineage.json`` names the stage-1 model it was trained on, loaded from there once
        its encoder is checked to be the same."""
        if classifier_dir is None and not storage.exists(storage.join(directory, "semantic_encoder.json")):
            stage1 = (read_lineage(directory) or {}).get("stage1")
            if stage1:
                check_lineage(stage1, {"stage 2": directory})
                directory, classifier_dir = stage1, directory
        cdir = classifier_dir or directory
        return cls(DiffusionAutoencoder.load(directory), load_attribute_classifier(cdir), load_attribute_library(cdir))

    def prepare(self, image: Image.Image | bytes | str) -> torch.Tensor:
        """Any image source → (1, 3, S, S) tensor (centre square crop at the model's size)."""
        return to_tensor(center_square(load_image(image), self.model.cfg.image_size))

    @torch.no_grad()
    def encode(self, image: Image.Image | bytes | str | torch.Tensor, steps: int = 50) -> EncodedFace:
        x = image if isinstance(image, torch.Tensor) else self.prepare(image)
        z = self.model.encode(x)
        return EncodedFace(z, self.model.encode_stochastic(x, z, steps), x)

    def parse(self, edits: dict[str, float] | None = None, text: str | None = None) -> ParsedEdits:
        """Explicit {attribute: α} and/or text → validated edits (explicit values win on conflicts)."""
        return parse_edits(self.library, self.classifier, edits, text)

    @torch.no_grad()
    def edit(self, face: EncodedFace, edits: dict[str, float], steps: int = 50) -> torch.Tensor:
        """Render ``face`` with edited z_sem and its own x_T → (1, 3, H, W)."""
        z = edit_semantic(face.z_sem, self.classifier, edits, self.library)
        return self.model.render(face.x_T, z, steps)

    @torch.no_grad()
    def edit_image(
        self, image, edits: dict[str, float] | None = None, text: str | None = None, steps: int = 50
    ) -> tuple[Image.Image, ParsedEdits]:
        parsed = self.parse(edits, text)
        return to_pil(self.edit(self.encode(image, steps), parsed.edits, steps)), parsed

    @torch.no_grad()
    def interpolate(self, a: EncodedFace, b: EncodedFace, ts: list[float], steps: int = 50) -> torch.Tensor:
        """Faces between a and b: lerp z_sem, slerp x_T → (len(ts), 3, H, W)."""
        z = torch.cat([lerp(a.z_sem, b.z_sem, t) for t in ts])
        x = torch.cat([slerp(a.x_T, b.x_T, t) for t in ts])
        return self.model.render(x, z, steps)
