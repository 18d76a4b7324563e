"""The ``fet`` command: ``fet train …`` and ``fet edit …``."""

from __future__ import annotations

import argparse
import sys


def edit_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="fet edit", description="Edit attributes of a face image.")
    parser.add_argument("--model", required=True, help="directory (or s3:// URI) with the trained components")
    parser.add_argument("--image", required=True)
    parser.add_argument("--edit", default="", help='explicit edits, e.g. "Eyeglasses=+0.5,Smiling=0.3"')
    parser.add_argument("--text", default=None, help='free text, e.g. "add glasses and make her smile"')
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and rendering")
    parser.add_argument("-o", "--out", required=True, help="output PNG")
    args = parser.parse_args(argv)

    from fet.editor import FaceEditor
    from fet.images import save_image

    editor = FaceEditor.load(args.model)
    explicit = editor.library.parse_spec(args.edit) if args.edit else None
    image, parsed = editor.edit_image(args.image, explicit, args.text, args.steps)
    if parsed.unknown:
        print(f"ignored words that name no attribute: {parsed.unknown}", file=sys.stderr)
    save_image(image, args.out)
    print(f"edits {parsed.edits} → {args.out}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": "fet.train", "edit": None}
    if not argv or argv[0] not in commands:
        print(f"usage: fet {{{','.join(commands)}}} ...", file=sys.stderr)
        raise SystemExit(2)
    if argv[0] == "train":
        from fet.train import main as train_main

        train_main(argv[1:])
    else:
        edit_main(argv[1:])


if __name__ == "__main__":
    main()
