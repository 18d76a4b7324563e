"""How linearly z_sem carries the face attributes while stage 1 trains, for a choice of semantic encoder.

    PYTHONPATH=. python benchmarks/semantic_probe.py --shards outputs/bench_train/shards
    PYTHONPATH=. python benchmarks/semantic_probe.py --shards outputs/bench_train/shards \\
        --set encoder_head=flatten --set z_dim=256

Stage 1 (L_simple, Eq. 7) in one process on the train split of a shard directory's faces (for example
the one ``benchmarks/train_stages.py`` writes), with the Ray job's optimiser settings for the tiny
preset at 32 px: batch 16, AdamW at 5e-4 with 50 warm-up steps, clipping at 1, EMA 0.995. Every
``--every`` steps, and before the first, it fits one logistic regression per attribute on the EMA
encoder's z_sem of the train faces and scores the first 64 test faces (``linear_probe_auroc`` of the
training benchmark: what a linear read-out of z_sem reaches, the ceiling of stage 2's classifiers). At
the end it adds the test faces' reconstruction PSNR. ``--set KEY=VALUE`` overrides fields of the model
preset (``fet.models.presets.ImageModelConfig``). ``--pca K ...`` first probes the K leading principal
components of the pixels, the best a K-dimensional linear code of the images can do on this read-out.
Prints one JSON line per probe and a summary line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.train_stages import faces, linear_probe_auroc
from fet.autoencoder import DiffusionAutoencoder
from fet.config import ConfigError
from fet.diffusion.ddim import training_scheduler
from fet.training.config import resolve_model
from fet.training.ema import EMA
from fet.training.optim import apply_gradients
from fet.training.stage1 import reconstruction_report, stage1_loss, step_generator, warmup_lambda


def parse_sets(pairs: list[str]) -> dict[str, object]:
    """``["z_dim=256", "encoder_head=flatten"]`` → ``{"z_dim": 256, "encoder_head": "flatten"}``."""
    import yaml

    spec = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. --set z_dim=256")
        spec[key] = yaml.safe_load(value)
    return spec


@torch.no_grad()
def probe(model: DiffusionAutoencoder, train: tuple, test: tuple) -> float:
    encoder = model.encoder.eval()

    def codes(x: torch.Tensor):
        return torch.cat([encoder(chunk) for chunk in x.split(128)]).numpy()

    return linear_probe_auroc(codes(train[0]), train[1].numpy(), codes(test[0]), test[1].numpy())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="shard directory with face images (train and test splits)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=150, help="probe every this many steps")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: two runs side by side on 2 cores)")
    p.add_argument("--pca", type=int, nargs="*", default=[], metavar="K",
                   help="also probe the K leading principal components of the pixels")  # fmt: skip
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a model preset field, e.g. encoder_head=flatten (repeatable)")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fields = parse_sets(args.sets)
    try:
        cfg = resolve_model({"preset": "tiny", "image_size": args.size, **fields}, where="--set")
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    train, test = faces(args.shards, "train", args.size, None), faces(args.shards, "test", args.size, 64)
    for k in args.pca:
        from sklearn.decomposition import PCA

        pca = PCA(k, random_state=args.seed).fit(train[0].flatten(1).numpy())
        codes = [pca.transform(x.flatten(1).numpy()) for x in (train[0], test[0])]
        value = linear_probe_auroc(codes[0], train[1].numpy(), codes[1], test[1].numpy())
        print(json.dumps({"pixels_pca": k, "probe_auroc": value}), flush=True)
    torch.manual_seed(args.seed)
    model = DiffusionAutoencoder(cfg).train()
    ema = EMA(model, 0.995)
    params = [p for n, p in model.named_parameters() if not n.startswith("codec.")]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(50))
    noise = training_scheduler(cfg)
    batches = torch.Generator().manual_seed(args.seed)
    probes = {0: probe(ema.shadow, train, test)}
    print(json.dumps({"step": 0, "probe_auroc": probes[0]}), flush=True)
    start = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train[0]), (16,), generator=batches)
        loss = stage1_loss(model, train[0][idx], noise, step_generator(args.seed, step))
        apply_gradients(loss, opt, params, 1.0, schedule, ema, model)
        if step % args.every == 0 or step == args.steps:
            probes[step] = probe(ema.shadow, train, test)
            print(json.dumps({"step": step, "probe_auroc": probes[step], "loss": loss.item(),
                              "seconds": round(time.time() - start)}), flush=True)  # fmt: skip
    psnr_db, _ = reconstruction_report(ema.shadow.eval(), test[0][:32], 20)
    summary = {"model": fields, "train_faces": len(train[0]), "probe_auroc": probes,
               "reconstruction_psnr_db": psnr_db, "seconds": round(time.time() - start)}  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
