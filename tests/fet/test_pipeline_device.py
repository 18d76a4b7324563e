"""The pipeline on a GPU (a Serve replica's): inputs made on the CPU (decoded audio, the reference crop and its
landmark maps) move to the device, and the frames are those the CPU makes. Runs where CUDA is present."""

import numpy as np
import pytest
import torch

from fet.pipeline import FaceEditTalkerPipeline
from tests.fet.helpers import SIZE
from tests.fet.talking_helpers import build_bundle, speech, synthetic_face


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_a_gpu_pipeline_makes_the_frames_the_cpu_makes(tmp_path):
    bundle = build_bundle(tmp_path)
    image, lms = synthetic_face(SIZE)
    audio = speech(0.6)
    frames = {}
    for device in ("cpu", "cuda"):
        pipe = FaceEditTalkerPipeline.from_bundle(bundle, device)
        result = pipe(image, audio, text="add glasses", reference_landmarks=lms)
        assert result.edits.edits == {"Eyeglasses": 0.3}
        frames[device] = result.frames.astype(int)
    assert frames["cuda"].shape == frames["cpu"].shape == (15, SIZE, SIZE, 3)
    assert np.abs(frames["cuda"] - frames["cpu"]).mean() < 1.0  # float kernels differ in rounding only
