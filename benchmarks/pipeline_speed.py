"""Frames per second of FaceEditTalkerPipeline (random weights, saved and reloaded as a bundle).

    python benchmarks/pipeline_speed.py                      # tiny preset, 64 px, CPU
    python benchmarks/pipeline_speed.py --preset paper --device cuda --dtype bf16 --steps 25

The paper preset needs an SD-VAE directory (``--codec-path``); without one a random AutoencoderKL with
the SD-VAE layout is built and saved first (same shapes and cost, meaningless pictures). Prints one
JSON line: frames/s, and seconds of compute per second of 25 fps video.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sd_vae import random_sd_vae
from fet.audio.features import AudioEncoderConfig
from fet.autoencoder import DiffusionAutoencoder
from fet.bundle import export_bundle, save_audio_models, save_talker
from fet.editing.attributes import AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editor import save_attribute_model
from fet.landmarks.detector import FaceLandmarks
from fet.models.audio2mesh import Audio2Mesh, Audio2MeshConfig
from fet.models.audio2pose import Audio2Pose, Audio2PoseConfig
from fet.models.pose_guider import PoseGuiderConfig
from fet.models.presets import preset
from fet.models.talker import TalkerDenoiser
from fet.pipeline import FaceEditTalkerPipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--size", type=int, default=None, help="image size (tiny: 64)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--codec-path", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        overrides = {"image_size": args.size} if args.size else {}
        if args.preset == "paper":
            overrides["codec_path"] = args.codec_path or random_sd_vae(root / "vae")
        cfg = preset(
            args.preset, **({"image_size": 64} if args.preset == "tiny" and not args.size else {}), **overrides
        )
        ae = DiffusionAutoencoder(cfg)
        ae.save(str(root / "s1"))
        guider = PoseGuiderConfig(stem_channels=(16, 32, 64, 128) if cfg.latent_downsample == 8 else (16, 32))
        save_talker(str(root / "s3"), TalkerDenoiser.from_stage1(ae.denoiser, guider))
        clf = AttributeClassifier(cfg.z_dim)
        clf.fit_normalizer(torch.randn(64, cfg.z_dim))
        clf.trained[:] = True
        save_attribute_model(str(root / "s2"), clf, AttributeLibrary())
        audio = AudioEncoderConfig()
        save_audio_models(str(root / "a"), audio, Audio2Mesh(Audio2MeshConfig()), Audio2Pose(Audio2PoseConfig()))
        bundle = export_bundle(str(root / "b"), image_dir=str(root / "s1"), talker_dir=str(root / "s3"),
                               editing_dir=str(root / "s2"), audio_dir=str(root / "a"))  # fmt: skip
        pipe = FaceEditTalkerPipeline.from_bundle(bundle, args.device, steps=args.steps, batch_size=args.batch_size)
        if args.dtype == "bf16":
            for m in (pipe.bundle.talker, pipe.bundle.semantic_encoder, pipe.bundle.codec):
                m.to(torch.bfloat16)
        from tests.fet.talking_helpers import speech, synthetic_face

        image, face = synthetic_face(cfg.image_size)
        face = FaceLandmarks(face.points, face.transform, face.blendshapes)
        ref = pipe.encode(image, face)
        audio = speech(args.seconds)
        pipe(ref, audio[:8000])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = pipe(ref, audio)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    print(json.dumps({
        "preset": args.preset, "image_size": cfg.image_size, "steps": args.steps, "device": args.device,
        "dtype": args.dtype, "frames": result.num_frames, "seconds": round(seconds, 3),
        "frames_per_second": round(result.num_frames / seconds, 2),
        "compute_seconds_per_video_second": round(seconds / (result.num_frames / 25), 3),
        "threads": torch.get_num_threads(), "frames_mean": float(np.mean(result.frames)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
