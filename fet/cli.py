"""The ``fet`` command: ``fet train …``, ``fet generate …`` and ``fet edit …``."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of 1 or more")
    return value


def _device(text: str) -> str:
    from fet.device import DeviceError, resolve_device

    try:
        resolve_device(text)
    except DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _edit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--edit", default="", help='explicit edits, e.g. "Eyeglasses=+1,Smiling=0.3"')
    parser.add_argument("--text", default=None, help='free text, e.g. "add glasses and make her smile"')
    parser.add_argument("--steps", type=_positive_int, default=None, help="DDIM steps (default: the bundle's setting)")


def _report(parsed, notes: list[str]) -> None:
    for note in notes:
        print(note, file=sys.stderr)
    if parsed.unknown:
        print(f"ignored words that name no attribute: {parsed.unknown}", file=sys.stderr)


def generate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="fet generate", description="Talking-head video from a face and speech.")
    parser.add_argument("--bundle", required=True, help="bundle directory or s3:// URI")
    parser.add_argument("--image", required=True, help="reference portrait (PNG, JPEG, WebP)")
    parser.add_argument("--audio", required=True, help="speech (wav, mp3, m4a, flac, ...)")
    _edit_args(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=_positive_int, default=None, help="frames per denoiser batch")
    parser.add_argument("--pose-style", type=int, default=None)
    parser.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("-o", "--out", required=True, help="output .mp4 (path or s3:// URI)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from fet.pipeline import FaceEditTalkerPipeline

    pipe = FaceEditTalkerPipeline.from_bundle(args.bundle, args.device)
    edits = pipe.bundle.library.parse_spec(args.edit) if args.edit else None
    bars: list[tqdm] = []  # started by the first rendered batch, so a refused input prints no empty bar

    def progress(done: int, total: int) -> None:
        if not bars:
            # in a terminal it redraws in place; into a log or a pipe each draw is one more line: every 10 s
            bars.append(tqdm(total=total, desc="frames", unit="frame", mininterval=0.1 if sys.stderr.isatty() else 10))
        bars[0].update(done - bars[0].n)  # drawn at most every 0.1 s, and once more when it closes

    try:
        result = pipe(
            args.image, args.audio, edits, args.text, output=args.out, seed=args.seed, steps=args.steps,
            batch_size=args.batch_size, pose_style=args.pose_style, callback=progress,
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    _report(result.edits, result.notes)
    print(f"{result.num_frames} frames, {result.audio_seconds:.2f} s, edits {result.edits.edits} → {args.out}")


def edit_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="fet edit", description="Edit attributes of a face image.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="bundle directory or s3:// URI (detects and aligns the face)")
    source.add_argument("--model", help="stage 2's output (it names its stage 1), or one directory with both stages' "
                                        "(the image is used as an aligned crop)")  # fmt: skip
    parser.add_argument("--image", required=True)
    _edit_args(parser)
    parser.add_argument("-o", "--out", required=True, help="output image: .png, .jpg or .webp (path or s3:// URI)")
    args = parser.parse_args(argv)

    from PIL import Image

    from fet import storage
    from fet.images import image_format, save_image

    storage.check_writable(args.out)  # the destination, before the inversion, which can take minutes
    image_format(args.out)

    if args.bundle:
        from fet.pipeline import FaceEditTalkerPipeline

        pipe = FaceEditTalkerPipeline.from_bundle(args.bundle)
        edits = pipe.bundle.library.parse_spec(args.edit) if args.edit else None
        parsed = pipe.parse(edits, args.text)  # refuse bad edits before the inversion
        ref = pipe.encode(args.image, steps=args.steps)
        frame, _ = pipe.edit(ref, parsed.edits, None, args.steps)  # parsed keeps the text's ignored words
        image, notes = Image.fromarray(frame), ref.notes
    else:
        from fet.editor import FaceEditor

        editor = FaceEditor.load(args.model)
        explicit = editor.library.parse_spec(args.edit) if args.edit else None
        image, parsed = editor.edit_image(args.image, explicit, args.text, 50 if args.steps is None else args.steps)
        notes = []
    _report(parsed, notes)
    save_image(image, args.out)
    print(f"edits {parsed.edits} → {args.out}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": None, "generate": generate_main, "edit": edit_main}
    if not argv or argv[0] not in commands:
        print(f"usage: fet {{{','.join(commands)}}} ...", file=sys.stderr)
        raise SystemExit(2)
    if argv[0] == "train":
        from fet.train import main as train_main

        train_main(argv[1:])
        return
    from fet.storage import StorageError

    try:
        commands[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError, StorageError) as e:  # bad input: say what, no traceback
        print(f"fet {argv[0]}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
