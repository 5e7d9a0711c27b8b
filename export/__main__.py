"""python -m export --run RUN_DIR [--fold K] --out models/NAME [--int8] [--int8-max-ua-drop X]
[--triton DIR]"""

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
    parser.add_argument("--int8", action="store_true", help="add model.int8.onnx (CPU)")
    parser.add_argument(
        "--int8-max-ua-drop",
        type=float,
        help="with --int8: ship int8 only if its UA on held-out validation clips is at most "
        "this far below fp32's (default: export.quantize.INT8_MAX_UA_DROP)",
    )
    parser.add_argument("--triton", type=Path, help="also write a Triton model repository here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from export.parity import ParityError
    from export.run import export_run

    drop = args.int8_max_ua_drop
    gate = {} if drop is None else {"int8_max_ua_drop": drop}
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
