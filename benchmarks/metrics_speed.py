"""Agreement and speed of our metrics against their reference implementations, on the real test images.

    python benchmarks/metrics_speed.py [--media ../shared/media] [--repeat 3]

CPBD against the ``cpbd`` package (per image: both values, |difference|, seconds each, speed-up) and SSIM
against scikit-image (Wang et al. settings), on every image in ``media/image``. Prints one JSON line per
image and a summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fet.metrics.image_quality import ssim
from fet.metrics.sharpness import cpbd, gray


def best_time(fn, repeat: int) -> tuple[float, float]:
    """(value, fastest of ``repeat`` runs in seconds)."""
    times, value = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return value, min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--media", default=str(Path(__file__).resolve().parents[2] / "shared" / "media"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):  # cpbd 1.0.7 imports it for its command line; SciPy dropped it
        scipy.ndimage.imread = None
    from cpbd.compute import compute as reference_cpbd
    from skimage.metrics import structural_similarity

    ours_total = ref_total = 0.0
    worst_cpbd = worst_ssim = 0.0
    for path in sorted(Path(args.media, "image").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        g = gray(rgb)
        ours, t_ours = best_time(lambda g=g: cpbd(g), args.repeat)
        ref, t_ref = best_time(lambda g=g: reference_cpbd(g), args.repeat)
        blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(1.5)))
        s_ours, t_s_ours = best_time(lambda r=rgb, b=blurred: ssim(r, b), args.repeat)
        s_ref, t_s_ref = best_time(
            lambda r=rgb, b=blurred: structural_similarity(
                r, b, data_range=255, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            ),
            args.repeat,
        )
        ours_total, ref_total = ours_total + t_ours, ref_total + t_ref
        worst_cpbd, worst_ssim = max(worst_cpbd, abs(ours - ref)), max(worst_ssim, abs(s_ours - s_ref))
        print(json.dumps({
            "image": path.name, "size": list(rgb.shape[:2]),
            "cpbd": round(ours, 6), "cpbd_reference": round(ref, 6), "cpbd_seconds": round(t_ours, 4),
            "cpbd_reference_seconds": round(t_ref, 4), "cpbd_speedup": round(t_ref / t_ours, 1),
            "ssim": round(s_ours, 6), "ssim_skimage": round(s_ref, 6),
            "ssim_seconds": round(t_s_ours, 4), "ssim_skimage_seconds": round(t_s_ref, 4),
        }))  # fmt: skip
    print(json.dumps({"summary": True, "cpbd_max_abs_diff": worst_cpbd, "ssim_max_abs_diff": worst_ssim,
                      "cpbd_total_seconds": round(ours_total, 3), "cpbd_reference_total_seconds": round(ref_total, 3),
                      "cpbd_speedup": round(ref_total / ours_total, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
