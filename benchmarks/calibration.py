"""How well the exported model's confidence is calibrated on held-out speakers, and how well
such a test set can tell: ECE before and after the temperature, per test corpus, beside the ECE
a perfectly calibrated model would show on the same clips (its floor), for the temperature the
recipe fits (all validation speakers) and for one fitted on the real validation speakers only.

    python benchmarks/calibration.py --run runs/demo-voices --model models/demo

The run's fold files name the validation and test clips (``FOLD/valid.jsonl``, ``test.jsonl``);
the exported model (ONNX Runtime, CPU, as served) scores them; its logits times the temperature
folded into it are the uncalibrated logits. Writes ``benchmarks/results/calibration.json``;
``make tables`` renders it into docs/training.md and the README.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_voices import Scorer, decode, record_header, write_record  # noqa: E402
from benchmarks.real_voices_run import Failure  # noqa: E402
from training.data.utterance import Utterance, read_jsonl  # noqa: E402
from training.eval.calibration import ece, ece_floor, fit_temperature, nll  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "calibration.json"
GOAL_ECE = 0.05
# Corpora of synthetic speech: left out of "real validation speakers only".
SYNTHETIC = ("synthetic",)


def fold_clips(run_dir: Path, fold: str, part: str) -> list[Utterance]:
    path = run_dir / "folds" / fold / f"{part}.jsonl"
    if not path.is_file():
        raise Failure(f"{path} is missing: not a run directory with fold {fold!r}")
    return read_jsonl(path)


def scored(scorer: Scorer, rows: list[Utterance], temperature: float) -> dict[str, np.ndarray]:
    """Uncalibrated logits, label indices and corpus of the utterances the model could score."""
    clips, kept, _ = decode(scorer, [Path(r.audio_path) for r in rows])
    if not clips:
        raise Failure("none of the fold's clips could be decoded")
    rows = [rows[i] for i in kept]
    unknown = sorted({r.label for r in rows} - set(scorer.labels))
    if unknown:
        raise Failure(f"labels {unknown} are not the model's {scorer.labels}")
    return {
        "logits": scorer.logits(clips) * temperature,
        "labels": np.array([scorer.labels.index(r.label) for r in rows]),
        "corpus": np.array([r.corpus or "all" for r in rows]),
    }


def part_report(logits: np.ndarray, labels: np.ndarray, t: float, draws: int) -> dict:
    return {
        "clips": len(labels),
        "ece_before": ece(logits, labels),
        "ece_after": ece(logits, labels, t),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, t),
        "floor_after": ece_floor(logits, t, draws=draws),
        "accuracy": float((logits.argmax(-1) == labels).mean()),
    }


def measure(valid: dict, test: dict, draws: int) -> dict:
    """Per way of fitting T: T, and per test corpus (and all of them) ECE, NLL and the floor."""
    real = ~np.isin(valid["corpus"], SYNTHETIC)
    fits = {"all validation speakers": np.ones(len(valid["labels"]), bool)}
    if real.any() and not real.all():
        fits["real validation speakers only"] = real
    out = {}
    for name, mask in fits.items():
        t = fit_temperature(valid["logits"][mask], valid["labels"][mask])
        parts = {"all": np.ones(len(test["labels"]), bool)}
        corpora = sorted(set(test["corpus"]))
        if len(corpora) > 1:
            parts.update({c: test["corpus"] == c for c in corpora})
        out[name] = {
            "temperature": t,
            "valid_clips": int(mask.sum()),
            "test": {
                part: part_report(test["logits"][m], test["labels"][m], t, draws)
                for part, m in parts.items()
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the training run directory")
    parser.add_argument("--model", type=Path, required=True, help="its exported model directory")
    parser.add_argument("--draws", type=int, default=2000, help="draws of the ECE floor")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    command = "python benchmarks/calibration.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    report: dict = {**record_header(command), "goal_ece": GOAL_ECE}
    try:
        card = json.loads((args.model / "model.json").read_text(encoding="utf-8"))
        temperature = float(card.get("temperature") or 1.0)
        fold = card.get("training", {}).get("fold")
        if fold is None:
            raise Failure(f"{args.model}/model.json names no training fold")
        scorer = Scorer(args.model, batch_size=8, threads=args.threads)
        valid = scored(scorer, fold_clips(args.run, fold, "valid"), temperature)
        test = scored(scorer, fold_clips(args.run, fold, "test"), temperature)
    except (Failure, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["model"] = {"dir": str(args.model), "temperature": temperature, "fold": fold,
                       "sha256": card.get("files", {}).get("model.onnx", {}).get("sha256")}  # fmt: skip
    report["draws"] = args.draws
    report["fits"] = measure(valid, test, args.draws)
    write_record(report, args.out, started)
    from benchmarks.tables_voices import calibration

    print("\n".join(calibration(report)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
