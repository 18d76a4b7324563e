"""Single-process trainers: ``python -m fet.train {stage1,stage2,audio,stage3} --config F [key=value ...]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fet.config import ConfigError, load_config
from fet.data.shards import ShardError
from fet.data.sources import SourceError
from fet.storage import StorageError
from fet.training.config import AudioStageConfig, Stage1Config, Stage2Config, Stage3Config

STAGES = {"stage1": Stage1Config, "stage2": Stage2Config, "audio": AudioStageConfig, "stage3": Stage3Config}


def parse(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, str, Any]:
    """The command line → (its parser, the stage, the stage's config); exits 2 with the reason when the
    arguments or the config are wrong."""
    parser = argparse.ArgumentParser(prog="fet train", description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--config", help="YAML file in configs/train/ (defaults when omitted)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 optim.lr=2e-4")
    args = parser.parse_intermixed_args(argv)  # overrides before or after --config
    try:
        cfg = load_config(STAGES[args.stage], args.config, args.overrides)
    except (ConfigError, StorageError) as e:  # a mistyped key or a missing file: the reason, no traceback
        parser.error(str(e))
    return parser, args.stage, cfg


def main(argv: list[str] | None = None) -> None:
    parser, stage, cfg = parse(argv)
    if stage == "stage1":
        from fet.training.stage1 import train_stage1 as train
    elif stage == "stage2":
        from fet.training.stage2 import train_stage2 as train
    elif stage == "audio":
        from fet.training.stage_audio import train_audio_stage as train
    else:
        from fet.training.stage3 import train_stage3 as train
    try:
        metrics = train(cfg)
    except (StorageError, ShardError, SourceError) as e:  # data that is not there or not as expected
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
