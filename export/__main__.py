"""python -m export --run RUN_DIR [--fold K] --out models/NAME [--int8 | --no-int8]
[--int8-max-ua-drop X] [--int8-max-dimensions-diff X] [--int8-max-ccc-drop X] [--triton DIR]"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="training run directory")
    parser.add_argument("--fold", help="fold to export (default: best validation UA)")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        help="add model.int8.onnx (static int8, gated on held-out clips); default: for "
        "Whisper students only",
    )
    parser.add_argument(
        "--int8-max-ua-drop",
        type=float,
        help="ship int8 only if its UA on held-out validation clips is at most this far below "
        "fp32's (default: export.quantize.INT8_MAX_UA_DROP)",
    )
    parser.add_argument(
        "--int8-max-dimensions-diff",
        type=float,
        help="... and if it moves no dimension by more than this (scale units) on them, or "
        "(rated clips) lowers no dimension's CCC by more than --int8-max-ccc-drop (defaults: "
        "export.quantize.INT8_MAX_DIMENSIONS_DIFF, INT8_MAX_CCC_DROP)",
    )
    parser.add_argument("--int8-max-ccc-drop", type=float)
    parser.add_argument("--triton", type=Path, help="also write a Triton model repository here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from export.parity import ParityError
    from export.run import export_run

    limits = {
        "int8_max_ua_drop": args.int8_max_ua_drop,
        "int8_max_dimensions_diff": args.int8_max_dimensions_diff,
        "int8_max_ccc_drop": args.int8_max_ccc_drop,
    }
    gate = {key: value for key, value in limits.items() if value is not None}
    try:
        out = export_run(
            args.run, args.out, fold=args.fold, int8=args.int8, triton_dir=args.triton, **gate
        )
    except (ParityError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    meta = json.loads((out / "model.json").read_text())
    print(f"wrote {out}: parity {json.dumps(meta['parity'])}")
    if meta["int8"]:
        print(f"int8: {json.dumps(meta['int8'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
