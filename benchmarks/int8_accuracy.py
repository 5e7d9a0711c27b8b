"""int8 against fp32 on a trained student's test speakers: UA, WA, the dimensions (max abs
difference and CCC with the ratings), and whether int8 batches exactly.

    PYTHONPATH=. python benchmarks/int8_accuracy.py --run runs/demo --model models/demo
        [--fold NAME] [--out benchmarks/results/int8_accuracy.json]

The model directory is the export of the run's fold (``python -m export`` or the demo build);
its test clips (the fold's test.jsonl: speakers neither training nor the export's int8 gate
saw) are decoded as the server decodes them and run one at a time through model.onnx and
model.int8.onnx. Exact batching: the int8 model also runs the clips in padded batches
(neighbours in length order, as the batcher groups them) and every output of every row is
compared with the row alone (export.parity.length_batches: at most 8, the longest at most
twice the shortest). The export's own figures on the validation clips (its gate) are
copied from model.json beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emocore.audio import load_audio  # noqa: E402
from emocore.model_dir import INT8_FILE, MODEL_FILE, TOLERANCE  # noqa: E402
from export.parity import (  # noqa: E402
    batching_max_abs_diff,
    length_batches,
    open_session,
    run_onnx,
)
from export.run import choose_fold, resolve_audio  # noqa: E402
from training.data.utterance import dimension_array, read_jsonl  # noqa: E402
from training.eval.metrics import ccc_per_dimension, compute_metrics  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_accuracy.json"
# Goals for int8 Whisper students: UA within 1 point of fp32, batched exactly, the dimensions
# within 0.05 of fp32 (max abs, 1-5 scale) or their CCC within 0.01.
GOALS = {"ua_drop_points": 1.0, "dimensions_max_abs_diff": 0.05, "ccc_drop": 0.01}
BATCH = 8


def alone(session, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Every output, one utterance at a time (rows stacked per output)."""
    outputs = [run_onnx(session, [row]) for row in rows]
    return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]


def scores(outputs: list[np.ndarray], targets: list[int], ratings, classes: int) -> dict:
    metrics = compute_metrics(targets, outputs[0].argmax(1).tolist(), range(classes))
    entry = {"ua": metrics["ua"], "wa": metrics["wa"]}
    if len(outputs) > 2 and ratings is not None:
        entry["ccc"] = ccc_per_dimension(outputs[2], ratings)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--fold")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    started = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    meta = json.loads((args.model / "model.json").read_text())
    if INT8_FILE not in meta["files"]:
        raise SystemExit(f"{args.model} ships no int8 model: {meta['int8']}")
    fold = choose_fold(args.run, args.fold or (meta.get("training") or {}).get("fold"))
    labels = meta["labels"]
    utterances = read_jsonl(fold / "test.jsonl")
    limit = meta.get("max_samples")
    rows = [load_audio(resolve_audio(u.audio_path, args.run))[:limit] for u in utterances]
    targets = [labels.index(u.label) for u in utterances]
    rated = any(u.dimensions for u in utterances)
    ratings = dimension_array(utterances) if rated else None
    fp32 = alone(open_session(args.model / MODEL_FILE), rows)
    int8_session = open_session(args.model / INT8_FILE)
    int8 = alone(int8_session, rows)
    drift = max(
        batching_max_abs_diff(int8_session, batch)
        for batch in length_batches(rows, size=BATCH)
        if len(batch) > 1
    )
    result = {
        "fp32": scores(fp32, targets, ratings, len(labels)),
        "int8": scores(int8, targets, ratings, len(labels)),
        "argmax_agreement": float((fp32[0].argmax(1) == int8[0].argmax(1)).mean()),
        "int8_batched_max_abs_diff": drift,
    }
    result["ua_drop_points"] = round(100 * (result["fp32"]["ua"] - result["int8"]["ua"]), 2)
    met = {
        "ua": result["ua_drop_points"] <= GOALS["ua_drop_points"],
        "batched_exactly": drift <= TOLERANCE,
    }
    if len(fp32) > 2:
        result["dimensions_max_abs_diff"] = float(np.abs(fp32[2] - int8[2]).max())
        result["dimensions_mean_abs_diff"] = float(np.abs(fp32[2] - int8[2]).mean())
        close = result["dimensions_max_abs_diff"] <= GOALS["dimensions_max_abs_diff"]
        if "ccc" in result["fp32"]:
            drops = [
                a - b for a, b in zip(result["fp32"]["ccc"], result["int8"]["ccc"], strict=True)
            ]
            result["ccc_drop_max"] = max(drops)
            close = close or result["ccc_drop_max"] <= GOALS["ccc_drop"]
        met["dimensions"] = close
    commit = subprocess.run(
        ["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "command": "PYTHONPATH=. python benchmarks/int8_accuracy.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "commit": commit or None,
        "seconds": round(time.time() - started, 1),
        "load_average": [load_before, [round(x, 2) for x in os.getloadavg()]],
        "model": args.model.name,
        "backbone": meta["backbone"],
        "fold": fold.name,
        "test_clips": len(rows),
        "test_speakers": sorted({u.speaker for u in utterances}),
        "dimension_names": (meta.get("dimensions") or {}).get("names"),
        "goals": GOALS | {"batched_tolerance": TOLERANCE},
        **result,
        "met": met,
        "export_gate": meta["int8"],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "export_gate"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
