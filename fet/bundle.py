"""Bundles: one directory (local or ``s3://``) holding every trained component the pipeline needs.

    bundle.json                        format version, components, training runs, metrics, pipeline defaults
    semantic_encoder.{safetensors,json}  E_sem (stage 1)
    denoiser.{safetensors,json}          talker UNet (stage 3; initialised from stage 1)
    pose_guider.{safetensors,json}       E_ldm (stage 3)
    attribute_classifier.{…}, attribute_library.json   editing (stage 2)
    audio2mesh.{…}, audio2pose.{…}, audio_encoder.json  audio → landmarks (stage A)
    audio_encoder/                       wav2vec2 weights, when the audio encoder is wav2vec2
    codec/                               diffusers AutoencoderKL, when the codec is not pixel space
    face_landmarker.task                 MediaPipe FaceLandmarker used for the reference image

Every component is safetensors + JSON config; nothing is unpickled. ``export_bundle`` assembles a
bundle from the directories the training stages write; ``load_bundle`` checks every piece is there
and names what is missing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fet import storage
from fet.audio.features import AudioEncoder, AudioEncoderConfig, check_audio_weights
from fet.checkpoint import CheckpointError, load_weights, read_component_config, save_component
from fet.config import from_dict
from fet.device import resolve_device
from fet.editing.attributes import AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editor import load_attribute_classifier, load_attribute_library
from fet.landmarks.face_mesh import check_face_landmarker, face_landmarker_bytes
from fet.lineage import LineageError, check_lineage
from fet.models.audio2mesh import Audio2Mesh, Audio2MeshConfig
from fet.models.audio2pose import Audio2Pose, Audio2PoseConfig
from fet.models.codec import AutoencoderKLCodec, build_codec
from fet.models.pose_guider import PoseGuiderConfig
from fet.models.presets import ImageModelConfig
from fet.models.semantic_encoder import SemanticEncoder
from fet.models.talker import TalkerDenoiser
from fet.weight_files import check_weights_file

BUNDLE_FORMAT = 1
WEIGHT_COMPONENTS = ("semantic_encoder", "denoiser", "pose_guider", "attribute_classifier", "audio2mesh", "audio2pose")
FILES = ("attribute_library.json", "audio_encoder.json", "face_landmarker.task")


class BundleError(ValueError):
    """A bundle that is missing a component or whose components do not fit together."""


# -- component save/load used by the trainers and the bundle ------------------------------------------------
def save_talker(directory: str, talker: TalkerDenoiser) -> None:
    image = dataclasses.asdict(talker.cfg)
    save_component(directory, "denoiser", talker.denoiser, "denoiser", image)
    guider = {"image": image, "guider": dataclasses.asdict(talker.guider_cfg)}
    save_component(directory, "pose_guider", talker.pose_guider, "pose_guider", guider)


def load_talker(directory: str) -> TalkerDenoiser:
    den = read_component_config(directory, "denoiser", "denoiser")
    gd = read_component_config(directory, "pose_guider", "pose_guider")
    if gd["image"] != den:
        raise CheckpointError(f"{directory}: pose_guider.json was built for a different denoiser than denoiser.json")
    cfg = from_dict(ImageModelConfig, den, where=f"{directory}/denoiser.json")
    talker = TalkerDenoiser(cfg, from_dict(PoseGuiderConfig, gd["guider"], where=f"{directory}/pose_guider.json"))
    load_weights(directory, "denoiser", talker.denoiser)
    load_weights(directory, "pose_guider", talker.pose_guider)
    return talker.eval()


def load_semantic_encoder(directory: str) -> SemanticEncoder:
    cfg = from_dict(ImageModelConfig, read_component_config(directory, "semantic_encoder", "semantic_encoder"))
    return load_weights(directory, "semantic_encoder", SemanticEncoder(cfg)).eval()


def save_audio_models(
    directory: str, audio: AudioEncoderConfig, audio2mesh: Audio2Mesh, audio2pose: Audio2Pose
) -> None:
    storage.write_text(storage.join(directory, "audio_encoder.json"), json.dumps(dataclasses.asdict(audio), indent=2))
    save_component(directory, "audio2mesh", audio2mesh, "audio2mesh", dataclasses.asdict(audio2mesh.cfg))
    save_component(directory, "audio2pose", audio2pose, "audio2pose", dataclasses.asdict(audio2pose.cfg))


def load_audio_encoder_config(directory: str) -> AudioEncoderConfig:
    path = storage.join(directory, "audio_encoder.json")
    if not storage.exists(path):
        raise CheckpointError(f"{path}: missing; expected the audio encoder config written with Audio2Mesh")
    cfg = from_dict(AudioEncoderConfig, json.loads(storage.read_text(path)), where=path)
    if cfg.path and not storage.is_s3(cfg.path) and not Path(cfg.path).is_absolute():
        cfg.path = storage.join(directory, cfg.path)  # weights shipped inside the bundle
    return cfg


def load_audio_models(directory: str) -> tuple[Audio2Mesh, Audio2Pose]:
    mesh_cfg = from_dict(Audio2MeshConfig, read_component_config(directory, "audio2mesh", "audio2mesh"))
    pose_cfg = from_dict(Audio2PoseConfig, read_component_config(directory, "audio2pose", "audio2pose"))
    return (
        load_weights(directory, "audio2mesh", Audio2Mesh(mesh_cfg)).eval(),
        load_weights(directory, "audio2pose", Audio2Pose(pose_cfg)).eval(),
    )


# -- bundles ------------------------------------------------------------------------------------------------
EXTS = ("safetensors", "json")  # a component's weights and its config


def _copy(src: str, dst: str) -> None:
    storage.write_bytes(dst, storage.read_bytes(src))


def _tree_files(src: str | None, what: str) -> tuple[str, list[str]]:
    """(the folder, its files) of weights to copy into a bundle; BundleError when there are none."""
    base = str(src or "").rstrip("/")
    try:
        files = storage.list_files(base) if base else []
    except storage.NotFoundError:
        files = []
    if not files:
        raise BundleError(f"{src or '(no path)'}: no files; expected {what}")
    return base, files


def export_bundle(
    out: str,
    *,
    image_dir: str,
    talker_dir: str,
    editing_dir: str,
    audio_dir: str,
    face_landmarker: str | None = None,
    runs: dict[str, str] | None = None,
    metrics: dict[str, Any] | None = None,
    pipeline: dict[str, Any] | None = None,
) -> str:
    """Copy the components the training stages wrote into one bundle at ``out`` and write ``bundle.json``.

    image_dir: stage 1 (semantic_encoder); talker_dir: stage 3 (denoiser + pose_guider);
    editing_dir: stage 2 (attribute_classifier + attribute_library.json); audio_dir: stage A.
    The wav2vec2 weights and the codec named in the configs are copied in, so the bundle stands alone.
    """
    sources = {
        "semantic_encoder": image_dir,
        "denoiser": talker_dir,
        "pose_guider": talker_dir,
        "attribute_classifier": editing_dir,
        "audio2mesh": audio_dir,
        "audio2pose": audio_dir,
    }
    files = {f"{name}.{ext}": storage.join(src, f"{name}.{ext}") for name, src in sources.items() for ext in EXTS}
    files["attribute_library.json"] = storage.join(editing_dir, "attribute_library.json")
    for name, path in files.items():  # all checked before anything is written
        if not storage.exists(path):
            raise BundleError(f"{path}: missing; every bundle needs {name}")
    audio = load_audio_encoder_config(audio_dir)
    image_cfg = read_component_config(talker_dir, "denoiser", "denoiser")
    if read_component_config(image_dir, "semantic_encoder", "semantic_encoder") != image_cfg:
        raise BundleError(f"{image_dir}, {talker_dir}: the semantic encoder and denoiser are different image models")
    try:
        check_lineage(image_dir, {"stage2": editing_dir, "stage3": talker_dir})
    except LineageError as e:
        raise BundleError(str(e)) from e
    try:
        landmarker = face_landmarker_bytes(face_landmarker)
    except (OSError, ValueError) as e:
        raise BundleError(str(e)) from e
    trees = {}  # weights named by path in the configs, copied in so that the bundle stands alone
    if audio.kind == "wav2vec2":
        trees["audio_encoder"] = _tree_files(audio.path, f"the wav2vec2 model named in {audio_dir}/audio_encoder.json")
    if image_cfg.get("codec") != "identity":
        trees["codec"] = _tree_files(image_cfg["codec_path"], f"the codec named in {talker_dir}/denoiser.json")
    # whole: a weights file cut short is not copied into a bundle that then fails in every replica
    weights = [p for p in files.values() if p.endswith(".safetensors")]
    wav2vec2 = audio.path if audio.kind == "wav2vec2" else None
    _check_whole(weights, wav2vec2, image_cfg["codec_path"] if "codec" in trees else None)
    # everything is checked above; from here the old bundle is replaced
    storage.delete(storage.join(out, "bundle.json"))  # written last: until then no loader takes a half-replaced bundle
    for name, path in files.items():
        _copy(path, storage.join(out, name))
    storage.write_bytes(storage.join(out, "face_landmarker.task"), landmarker)
    for folder, (base, tree) in trees.items():
        for f in tree:
            _copy(f, storage.join(out, folder, f[len(base) + 1 :]))
    if audio.kind == "wav2vec2":
        audio.path = "audio_encoder"
    storage.write_text(storage.join(out, "audio_encoder.json"), json.dumps(dataclasses.asdict(audio), indent=2))
    info = {
        "format_version": BUNDLE_FORMAT,
        "components": {n: read_component_config(out, n, n) for n in WEIGHT_COMPONENTS},
        "audio_encoder": dataclasses.asdict(audio),
        "runs": runs or {},
        "metrics": metrics or {},
        "pipeline": pipeline or {},
    }
    storage.write_text(storage.join(out, "bundle.json"), json.dumps(info, indent=2, sort_keys=True))
    return out


@dataclass
class Bundle:
    """Every component of a bundle, loaded and on one device."""

    uri: str
    info: dict
    image_cfg: ImageModelConfig
    semantic_encoder: SemanticEncoder
    talker: TalkerDenoiser
    codec: torch.nn.Module
    classifier: AttributeClassifier
    library: AttributeLibrary
    audio_encoder: AudioEncoder
    audio2mesh: Audio2Mesh
    audio2pose: Audio2Pose
    face_landmarker: bytes  # MediaPipe's face_landmarker.task
    pipeline_defaults: dict = field(default_factory=dict)


def check_bundle(uri: str) -> dict:
    """bundle.json of ``uri`` after checking every file is present; errors name what is missing."""
    info_path = storage.join(uri, "bundle.json")
    if not storage.exists(info_path):
        raise BundleError(f"{uri}: no bundle.json; expected a bundle written by export_bundle")
    info = json.loads(storage.read_text(info_path))
    if info.get("format_version") != BUNDLE_FORMAT:
        raise BundleError(f"{info_path}: format_version {info.get('format_version')}, expected {BUNDLE_FORMAT}")
    missing = [
        f"{n}.{ext}"
        for n in WEIGHT_COMPONENTS
        for ext in ("safetensors", "json")
        if not storage.exists(storage.join(uri, f"{n}.{ext}"))
    ] + [f for f in FILES if not storage.exists(storage.join(uri, f))]
    if missing:
        raise BundleError(f"bundle {uri}: missing component file(s) {', '.join(missing)}")
    weights = [storage.join(uri, f"{n}.safetensors") for n in WEIGHT_COMPONENTS]
    wav2vec2 = (info.get("audio_encoder") or {}).get("kind") == "wav2vec2"
    codec = ((info.get("components") or {}).get("denoiser") or {}).get("codec", "identity") != "identity"
    try:  # whole, not cut short by a copy or an upload: a few small reads here, not a traceback in every replica
        _check_whole(weights, storage.join(uri, "audio_encoder") if wav2vec2 else None,
                     storage.join(uri, "codec") if codec else None)  # fmt: skip
    except BundleError as e:
        raise BundleError(f"bundle {uri}: {e}") from e
    return info


def _check_whole(weights: list[str], wav2vec2: str | None, codec: str | None) -> None:
    """BundleError naming the first of these that is not whole: component weights files, a saved
    Wav2Vec2Model folder, an AutoencoderKL folder (``fet.weight_files``: a few small reads each)."""
    try:
        for path in weights:
            check_weights_file(path)
        if wav2vec2 is not None:
            check_audio_weights(AudioEncoderConfig(kind="wav2vec2", path=wav2vec2))
        if codec is not None:
            AutoencoderKLCodec.check_weights(codec)
    except (OSError, ValueError) as e:
        raise BundleError(str(e)) from e


def held_out_aurocs(info: dict) -> dict[str, float]:
    """Attribute → AUROC of its stage-2 classifier on the held-out faces of its training run, from a
    bundle.json (``check_bundle``); attributes the run did not score (or a bundle without training
    metrics) are absent. How far an edit of that attribute can be trusted: near 0.5 the classifier, and
    so its edit direction, reads nothing of the attribute."""
    stage2 = (info.get("metrics") or {}).get("stage2") or {}
    prefix = "val_auroc/"
    return {k.removeprefix(prefix): float(v) for k, v in stage2.items() if k.startswith(prefix) and v is not None}


def load_bundle(uri: str, device: str | torch.device = "cpu") -> Bundle:
    device = resolve_device(device)  # before reading any weights
    info = check_bundle(uri)
    try:
        talker = load_talker(uri)
        encoder = load_semantic_encoder(uri)
        image_cfg = talker.cfg
        if dataclasses.asdict(encoder.cfg) != dataclasses.asdict(image_cfg):
            raise BundleError(f"bundle {uri}: semantic_encoder and denoiser describe different image models")
        if image_cfg.codec != "identity":
            image_cfg = dataclasses.replace(image_cfg, codec_path=storage.join(uri, "codec"))
        classifier = load_attribute_classifier(uri)
        if classifier.z_dim != image_cfg.z_dim:
            raise BundleError(f"bundle {uri}: classifier z_dim {classifier.z_dim} != model z_dim {image_cfg.z_dim}")
        audio_cfg = load_audio_encoder_config(uri)
        audio2mesh, audio2pose = load_audio_models(uri)
    except CheckpointError as e:
        raise BundleError(f"bundle {uri}: {e}") from e
    audio_encoder = AudioEncoder(audio_cfg)
    for name, m in (("audio2mesh", audio2mesh), ("audio2pose", audio2pose)):
        if m.cfg.feature_dim != audio_encoder.dim:
            raise BundleError(
                f"bundle {uri}: {name} expects {m.cfg.feature_dim}-d audio features, "
                f"the audio encoder gives {audio_encoder.dim}"
            )
    task = storage.join(uri, "face_landmarker.task")
    try:  # MediaPipe reads it from memory
        landmarker = check_face_landmarker(storage.read_bytes(task), task)
    except ValueError as e:
        raise BundleError(f"bundle {uri}: {e}") from e
    modules = [encoder, talker, classifier, audio_encoder, audio2mesh, audio2pose]
    codec = build_codec(image_cfg)
    for m in [*modules, codec]:
        m.to(device).eval()
    return Bundle(
        uri,
        info,
        image_cfg,
        encoder,
        talker,
        codec,
        classifier,
        load_attribute_library(uri),
        audio_encoder,
        audio2mesh,
        audio2pose,
        landmarker,
        info.get("pipeline", {}),
    )
