"""The end-to-end demo on the embedded default (``make demo``): everything a user does, on this machine.

SynthTalk → local Ray head → ray job submit: preprocessing → ray job submit: stage 1 beside stage A,
then stage 2 beside stage 3 (2 CPU workers each, DeepSpeed ZeRO-2, MLflow on SQLite) → bundle →
ray job submit: evaluation (Table 1/2 on the test clips) → serve deploy → HTTP: an edited image and an
edited talking video → OUT/: edited.png, talking.mp4 (+ an enlarged copy), samples.png, eval/results.md,
summary.json; then it stops what it started (``--keep-running`` leaves Ray and Serve up).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import psutil
import yaml
from PIL import Image

from fet.audio.load import wav_bytes
from fet.data.celeba_attributes import read_celeba_attributes
from fet.data.shards import read_rows, unpack
from fet.data.synthtalk.__main__ import generate
from fet.editing.attributes import CELEBA_ATTRIBUTES
from fet.images import image_grid
from fet.media.mp4 import encode_mp4
from fet.metrics.sync import landmark_audio_sync
from ray_jobs.local_cluster import BIN, free_port, start_head

REPO = Path(__file__).resolve().parents[1]
HEAD_CPUS = 2  # the local head's CPUs: this machine's cores
STEPS = [
    ("stage1", "semantic encoder + denoiser (paper Eq. 7)"),
    ("stage2", "attribute classifiers on z_sem (Eq. 8)"),
    ("audio", "Audio2Mesh + Audio2Pose"),
    ("stage3", "talker denoiser + PoseGuider (Eq. 9)"),
]
# The training jobs in the order they are submitted; the stages of one wave run at the same time. Stage 2
# and stage 3 need stage 1's encoder; stage A needs nothing. Each short job (stage A, stage 2) runs beside
# a long one: most of a short job's wall time is starting processes and loading data, which leaves CPU
# idle that the long job's workers then use.
WAVES = [["stage1", "audio"], ["stage2", "stage3"]]
# CPU share of a training worker in a wave of two jobs: 2 jobs × 2 workers × 0.45 leaves 0.2 CPU of the
# head's 2 to the Ray Data read tasks that feed them (READ_CPUS each, ray_jobs.shard_reader).
PAIRED_WORKER_CPUS = 0.45


def say(i: int, n: int, text: str, t0: float) -> None:
    print(f"\n[{i}/{n}] {text}   ({time.time() - t0:.0f} s)", flush=True)


# What the demo's jobs run: the code they import and the configs they read.
JOB_CODE = ("fet", "ray_jobs", "serve", "configs", "pyproject.toml")


def job_code(dest: Path) -> Path:
    """A copy of the repository's ``JOB_CODE`` in ``dest``, taken once as the demo starts: the working
    directory every one of its ``ray job submit`` ships.

    Ray names a working directory's package by hashing the folder, then hashes it again to upload it. A file
    that changes in between (the demo's own output, ``make demo > demo-output.txt`` in the repository) leaves
    the job naming a package that was never uploaded, and it fails with "Failed to download runtime_env file
    package". Nothing writes into this copy."""
    for name in JOB_CODE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


# What `ray job submit` prints when its job could not fetch the working directory's package from the head.
# The client skips the upload of a package the head already has; when the last job holding that package
# ends between that check and the new job's start, the head deletes it and the new job finds nothing.
# The job never started, and submitting it again uploads the package again.
PACKAGE_LOST = "Failed to download runtime_env file package"


def submit(head, code: Path, *entrypoint: str, attempts: int = 30, package_attempts: int = 3) -> None:
    """``ray job submit`` of ``python *entrypoint`` with the working directory ``code`` (``job_code``);
    raises with the job's log tail when it fails. Submitted again: a refusal from a head that has just started
    and has no job agent yet, and, up to ``package_attempts`` submissions in all, a job that found its code
    package gone (``PACKAGE_LOST``)."""
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={head.address}", f"--working-dir={code}", "--",
           "python", *entrypoint]  # fmt: skip
    lost = 0
    for _ in range(attempts):
        proc = subprocess.Popen(cmd, env=head.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
        tail: list[str] = []
        shown = ""
        for line in proc.stdout:
            tail = [*tail, line][-60:]
            text = line.rstrip().split("[0m ")[-1]
            wanted = "] step " in line or "error" in line.lower() or "succeeded" in line or "MLflow run" in line
            if wanted and text != shown:  # worker lines can arrive twice through the job log
                print("   " + text, flush=True)
                shown = text
        if proc.wait() == 0:
            return
        log = "".join(tail)
        if PACKAGE_LOST in log:
            lost += 1
            if lost >= package_attempts:
                raise RuntimeError(f"job {' '.join(entrypoint)}: the head lost the package of its code ({code}) "
                                   f"in each of {lost} submissions:\n{log}")  # fmt: skip
            print("   the job did not start: the head no longer had its code package; submitting it again", flush=True)
        elif "No available agent" not in log:
            raise RuntimeError(f"job {' '.join(entrypoint)} failed:\n{log}")
        time.sleep(2)
    raise RuntimeError(f"the Ray head at {head.address} did not accept jobs")


# The HTTP requests: text, and the labels the face must have. Both ask for black hair on a light-skinned,
# brown-haired face: the edited still, and the same person talking with the edit held in every frame.
# Black hair is the one edit the demo's bundle draws plainly. Rendered offline on this face (5167323's
# bundle, α 0.5 to 2), "gray hair" and "blond hair" both turn the hair ginger and the skin yellow, and the
# other attributes change little. (At 32 px glasses are a few pixels. Black hair on a blond face
# darkened the skin with the hair, and MediaPipe then lost the face in most frames of the video, so its
# sync went unmeasured. A hat drew in some runs and not at all in others.)
BROWN_HAIRED = {"Brown_Hair": 1, "No_Beard": 1, "Eyeglasses": 0}  # the mouth and the hair in view
IMAGE_REQUEST = ("black hair", BROWN_HAIRED)
VIDEO_REQUEST = ("black hair", BROWN_HAIRED)
# Table 2 of the evaluation job: one edit the 32 px model draws (each edit is one more render of the clip;
# glasses, the config's other edit, are a few pixels at this size and do not draw)
EVAL_EDIT = "blond hair"
# CPU share of the evaluation job's worker, which runs while Serve starts and answers the requests: Serve's
# replicas at their most (serve.options defaults), this worker and its read tasks fit on the head's CPUs
EVAL_WORKER_CPUS = 0.6
WORLD_IMAGES = 600  # SynthTalk faces the demo draws (--images); the requests' faces are among its held-out ones
WORLD_CLIPS = 24  # its four-second clips (--clips): training, validation and test clips


def serve_config(out: Path, port: int) -> dict:
    """The demo's ``serve deploy`` config: the bundle on 127.0.0.1:``port``, no API key, the Serve
    defaults of ``serve.options.AppOptions`` for replicas and CPUs."""
    return {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [{"name": "faceedittalker", "route_prefix": "/", "import_path": "serve.app:build_app",
                              "args": {"bundle": str(out / "bundle"), "state_dir": str(out / "serve_state"),
                                       "api_key_env": None, "sync_max_seconds": 30}}]}  # fmt: skip


def has_labels(attributes, labels: dict[str, int]) -> bool:
    """Whether a face's 40 attribute values (1 present, 0 absent, -1 unknown) carry these labels."""
    return all(attributes[CELEBA_ATTRIBUTES.index(a)] == v for a, v in labels.items())


def held_out_face(out: Path, labels: dict[str, int]) -> Path:
    """The first held-out SynthTalk face (by id) with these attribute labels (1 present, 0 absent)."""
    rows = read_rows(str(out / "shards"), "images", "test", ["image_id", "split", "attributes"])
    ids = sorted(r["image_id"] for r in rows if has_labels(r["attributes"], labels))
    if not ids:
        raise RuntimeError(f"no held-out face with {labels} in {out / 'shards'}")
    return out / "synthtalk/images" / f"{ids[0]}.png"


def world_shortfall(world: Path, eval_clips: int) -> list[str]:
    """What a drawn SynthTalk world lacks that the demo needs (nothing: an empty list): training clips for
    two workers, test clips for the evaluation, a held-out face for each HTTP request."""
    clips = {split: len(list((world / "clips" / split).glob("*.mp4"))) for split in ("train", "test")}
    lacks = []
    if clips["train"] < 2:
        lacks.append(f"{clips['train']} training clip(s); the two training workers need at least 2")
    if clips["test"] < max(1, eval_clips):
        lacks.append(f"{clips['test']} test clip(s); the evaluation needs {max(1, eval_clips)}")
    labels = read_celeba_attributes(str(world / "CelebAMask-HQ-attribute-anno.txt"))
    held_out = [labels[p.name] for p in sorted((world / "images" / "test").glob("*.png")) if p.name in labels]
    for text, wanted in (IMAGE_REQUEST, VIDEO_REQUEST):
        if not any(has_labels(row, wanted) for row in held_out):
            lacks.append(f"no held-out face with {wanted} for the request {text!r}")
    return lacks


def stop_on_signals(heads: list) -> None:
    """On SIGTERM or SIGHUP (`timeout`, a closed terminal, a cancelled CI job) stop this process's children
    (SynthTalk's pool workers, the `ray job submit` clients), then the heads in ``heads`` (the one the
    demo has started by then, if any), and exit, instead of leaving jobs training behind."""

    def stop(signum: int, _frame) -> None:
        for child in psutil.Process().children(recursive=True):  # first, so that they print no error
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        for head in heads:
            head.stop()
        what = "the Ray head and its jobs are stopped" if heads else "before the Ray head started"
        print(f"\nstopped by {signal.Signals(signum).name}: {what}", file=sys.stderr)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    # a forked child (a worker of SynthTalk's pool) must not inherit them: the pool ends its workers with
    # SIGTERM, and a worker blocked on the pool's queue never runs a Python handler, so the pool waits for ever
    os.register_at_fork(after_in_child=_default_signals)


def _default_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def crop_scale(shards: str) -> float:
    """How loosely the training frames frame the face: frame side / landmark extent (median)."""
    ratios = []
    for row in read_rows(shards, "clips", "train", ["clip_id", "split", "landmarks"]):
        lm = unpack(row["landmarks"])[0, :, :2]
        ratios.append(1.0 / float((lm.max(0) - lm.min(0)).max()))
    return float(np.median(ratios))


def read_video(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])
    with av.open(io.BytesIO(data)) as c:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        audio = np.concatenate([o.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])
                                for o in resampler.resample(f)])  # fmt: skip
    return frames, audio


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--images", type=int, default=WORLD_IMAGES)
    p.add_argument("--clips", type=int, default=WORLD_CLIPS)
    p.add_argument("--size", type=int, default=32, help="training resolution (the world is drawn at 64 px)")
    p.add_argument("--steps1", type=int, default=500)
    p.add_argument("--steps2", type=int, default=200)
    p.add_argument("--steps-audio", type=int, default=120)
    p.add_argument("--steps3", type=int, default=400)
    p.add_argument("--landmark-scale", type=float, default=2.0,
                   help="bundle default: how far the landmarks move the face (1: the talker as trained)")  # fmt: skip
    p.add_argument("--eval-clips", type=int, default=1,
                   help="test clips the evaluation job generates and measures (0: every test clip)")  # fmt: skip
    p.add_argument("--keep-running", action="store_true", help="leave the Ray head and Serve running")
    args = p.parse_args(argv)
    for name in ("images", "clips", "steps1", "steps2", "steps_audio", "steps3"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected 1 or more")
    if args.size < 16:
        p.error(f"--size {args.size}: expected 16 or more (pixels)")
    if args.eval_clips < 0:
        p.error(f"--eval-clips {args.eval_clips}: expected 0 (every test clip) or more")
    if not args.landmark_scale > 0:
        p.error(f"--landmark-scale {args.landmark_scale}: expected a number above 0")
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    n, t0 = 9, time.time()
    timings: dict[str, float] = {}

    heads: list = []  # the head, once started: what SIGTERM and SIGHUP stop
    stop_on_signals(heads)
    say(1, n, f"SynthTalk: {args.images} faces and {args.clips} four-second clips", t0)
    t = time.time()
    generate(out / "synthtalk", images=args.images, clips=args.clips, size=64, seconds=4.0, progress=True)
    timings["synthtalk"] = time.time() - t
    lacks = world_shortfall(out / "synthtalk", args.eval_clips)
    if lacks:  # found now, before the head starts, not after minutes of training
        print(f"error: --images {args.images} --clips {args.clips} drew a world too small for the demo: "
              f"{'; '.join(lacks)}. Draw more (the defaults: --images {WORLD_IMAGES} --clips {WORLD_CLIPS}).",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)

    code = job_code(out / "job_code")
    say(2, n, f"starting a local Ray head ({HEAD_CPUS} CPUs)", t0)
    head = start_head(num_cpus=HEAD_CPUS)
    heads.append(head)
    print(f"   dashboard {head.address}")
    done = False
    try:
        say(3, n, "ray job submit: preprocessing (Ray Data → clip and image shards)", t0)
        data_cfg = yaml.safe_load((REPO / "configs/data/synthtalk.yaml").read_text())
        data_cfg["sources"] = [{"kind": "synthtalk", "root": str(out / "synthtalk/clips")},
                               {"kind": "synthtalk_images", "root": str(out / "synthtalk/images")}]  # fmt: skip
        data_cfg |= {"out": str(out / "shards"), "size": args.size}
        (out / "configs").mkdir()
        (out / "configs/data.yaml").write_text("# demo preprocessing\n" + yaml.safe_dump(data_cfg))
        t = time.time()
        submit(head, code, "-m", "ray_jobs.preprocess", "--config", str(out / "configs/data.yaml"))
        timings["preprocess"] = time.time() - t

        common = [f"data.shards={out / 'shards'}", f"storage_path={out / 'ray_results'}",
                  f"mlflow.tracking_uri=sqlite:///{out / 'mlflow.db'}"]  # fmt: skip
        steps = {"stage1": args.steps1, "stage2": args.steps2, "audio": args.steps_audio, "stage3": args.steps3}
        extra = {
            "stage1": [f"task.model.image_size={args.size}", "checkpoint.every=200", "mlflow.sample_every=0"],
            "stage2": [f"task.autoencoder={out / 'components/stage1'}"],
            "audio": ["checkpoint.every=100"],
            "stage3": [f"task.autoencoder={out / 'components/stage1'}", "checkpoint.every=100",
                       "mlflow.sample_every=0"],
        }  # fmt: skip
        what = dict(STEPS)

        def train(stage: str, *more: str) -> None:
            t = time.time()
            submit(head, code, "-m", f"ray_jobs.train_{stage}", "--config", f"configs/train/ray/{stage}_tiny.yaml",
                   *common, f"out={out / 'components' / stage}", f"steps={steps[stage]}", *extra[stage],
                   *more)  # fmt: skip
            timings[stage] = time.time() - t

        for wave in WAVES:
            jobs = " and, at the same time, ".join(f"{s} — {what[s]}, {steps[s]} steps" for s in wave)
            say(4, n, f"ray job submit: {jobs} (2 workers each, ZeRO-2)", t0)
            t = time.time()
            with ThreadPoolExecutor(len(wave)) as pool:
                for done in [pool.submit(train, s, f"scaling.cpus_per_worker={PAIRED_WORKER_CPUS}") for s in wave]:
                    done.result()  # raises the first failed job's error
            timings["+".join(wave)] = time.time() - t

        say(5, n, "exporting the bundle", t0)
        scale = crop_scale(str(out / "shards"))
        subprocess.run([sys.executable, "-m", "ray_jobs.export_bundle", "--out", str(out / "bundle"),
                        *[f"--{s}={out / 'components' / s}" for s, _ in STEPS],
                        "--pipeline", f"crop_scale={scale:.3f}", "steps=20", f"landmark_scale={args.landmark_scale}"],
                       check=True, cwd=REPO)  # fmt: skip

        say(6, n, f"ray job submit: evaluation — {args.eval_clips} test clips, the paper's Table 1 and 2 (it runs "
                  "while Serve starts and answers the requests)", t0)  # fmt: skip

        def evaluate() -> None:
            t = time.time()
            submit(head, code, "-m", "ray_jobs.evaluate", "--config", "configs/eval/synthtalk.yaml",
                   f"shards={out / 'shards'}", f"bundle={out / 'bundle'}", f"out={out / 'eval'}",
                   f"max_clips={args.eval_clips}", "max_seconds=2", f"edits=[{EVAL_EDIT}]",
                   f"ray.cpus_per_worker={EVAL_WORKER_CPUS}",
                   f"mlflow.tracking_uri=sqlite:///{out / 'mlflow.db'}", "mlflow.run_name=demo-eval")  # fmt: skip
            timings["evaluate"] = time.time() - t

        background = ThreadPoolExecutor(1)
        evaluation = background.submit(evaluate)

        say(7, n, "serve deploy: Ingress + Encoder + Animator + Renderer", t0)
        port = free_port()
        (out / "configs/serve.yaml").write_text("# demo Serve config\n" + yaml.safe_dump(serve_config(out, port)))
        subprocess.run([str(BIN / "serve"), "deploy", str(out / "configs/serve.yaml"), "-a", head.address],
                       check=True, env=head.env, cwd=REPO)  # fmt: skip
        from fet.client import Client

        client, url = Client(f"http://127.0.0.1:{port}"), f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while True:
            try:
                if client._call("GET", "/readyz").status_code == 200:
                    break
            except Exception:
                if time.time() > deadline:
                    raise
            time.sleep(1)
        print(f"   serving on {url} (OpenAPI docs: {url}/docs)")

        image_face, video_face = held_out_face(out, IMAGE_REQUEST[1]), held_out_face(out, VIDEO_REQUEST[1])
        say(8, n, f"HTTP: {IMAGE_REQUEST[0]!r} on face {image_face.stem} (PNG), {VIDEO_REQUEST[0]!r} on face "
                  f"{video_face.stem} talking (mp4)", t0)  # fmt: skip
        clip = next(read_rows(str(out / "shards"), "clips", "test", ["clip_id", "split", "audio"]))
        speech = unpack(clip["audio"])
        t = time.time()
        (out / "edited.png").write_bytes(client.edit(client.encode(image_face.read_bytes()), text=IMAGE_REQUEST[0]))
        timings["http_edit"] = time.time() - t
        t = time.time()
        video = client.generate(client.encode(video_face.read_bytes()), wav_bytes(speech), text=VIDEO_REQUEST[0])
        timings["http_generate"] = time.time() - t
        (out / "talking.mp4").write_bytes(video)
        frames, audio = read_video(video)
        big = np.stack([np.asarray(Image.fromarray(f).resize((256, 256), Image.Resampling.BICUBIC)) for f in frames])
        (out / "talking_256px.mp4").write_bytes(encode_mp4(big, audio, 16000, 25))

        t = time.time()
        evaluation.result()  # raises the evaluation job's error
        background.shutdown()
        timings["evaluate_wait"] = time.time() - t
        print((out / "eval/results.md").read_text())

        say(9, n, "summary", t0)
        picks = np.linspace(0, len(frames) - 1, 8).round().astype(int)
        strip = image_grid(np.stack([np.asarray(Image.fromarray(frames[i]).resize((96, 96))) for i in picks]), rows=1)
        strip.save(out / "video_frames.png")
        sheets = [out / "components/stage1/reconstructions.png", out / "components/stage2/edits.png",
                  out / "components/stage3/samples_stage3.png", out / "video_frames.png"]  # fmt: skip
        pics = [Image.open(s).convert("RGB") for s in sheets if s.exists()]
        width = max(pic.width * 3 for pic in pics)
        sheet = Image.new("RGB", (width, sum(pic.height * 3 for pic in pics)), "white")
        y = 0
        for pic in pics:
            sheet.paste(pic.resize((pic.width * 3, pic.height * 3), Image.Resampling.NEAREST), (0, y))
            y += pic.height * 3
        sheet.save(out / "samples.png")
        from fet.landmarks.detector import FaceLandmarkDetector

        with FaceLandmarkDetector() as detector:  # only the detector, not the whole bundle
            marks = [detector.detect(f) for f in big]
        found = [m.points for m in marks if m is not None]
        sync = landmark_audio_sync(np.stack(found), audio) if len(found) == len(big) else None
        runs = {s: json.loads((out / "components" / s / "training_run.json").read_text()) for s, _ in STEPS}
        summary = {
            "wall_seconds": round(time.time() - t0, 1),
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "metrics": {s: r["metrics"] for s, r in runs.items()},
            "evaluation": json.loads((out / "eval/results.json").read_text())["metrics"],
            "mlflow_runs": {s: r["mlflow_run_id"] for s, r in runs.items()},
            "requests": {"edited.png": {"face": image_face.stem, "text": IMAGE_REQUEST[0]},
                         "talking.mp4": {"face": video_face.stem, "text": VIDEO_REQUEST[0]}},
            "video": {"frames": len(frames), "seconds": len(audio) / 16000,
                      "frames_with_face": len(found),
                      "mouth_audio_sync": None if sync is None or not np.isfinite(sync.correlation)
                                          else {"offset": sync.offset, "correlation": sync.correlation}},
        }  # fmt: skip
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        print(f"\noutputs in {out}: edited.png, talking.mp4, talking_256px.mp4, samples.png, eval/, summary.json")
        print(f"MLflow UI:  {BIN / 'mlflow'} ui --backend-store-uri sqlite:///{out / 'mlflow.db'}")
        keep = "" if args.keep_running else " (stopped now; keep it with: make demo ARGS=--keep-running)"
        print(f"Serve docs: {url}/docs{keep}")
        done = True
    finally:
        if not args.keep_running:
            head.stop()  # Serve's controller, proxy and replicas are actors of this head: they stop with it
            stopped = isinstance(sys.exc_info()[1], (SystemExit, KeyboardInterrupt))  # by a signal, or refused
            if done or stopped:  # its logs (about 8 MB) are kept only when something failed
                shutil.rmtree(head.temp, ignore_errors=True)
            else:
                print(f"Ray's logs: {head.temp}/session_latest/logs", file=sys.stderr)


if __name__ == "__main__":
    main()
