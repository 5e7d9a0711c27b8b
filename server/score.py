"""Offline scoring for people with files, not a service.

    python -m server.score predict PATH... [--url URL] [--out results.jsonl|results.csv]

Runs the model directory in-process (ONNX Runtime, no server), or sends each file to a running
server with ``--url``. Folders are walked for audio files. One row per file (per segment with
``--segment`` in CSV); a file that fails becomes a row with its error, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from emocore import scoring
from emocore.audio import SAMPLE_RATE, AudioError, load_audio
from server.settings import Settings

if TYPE_CHECKING:
    from server.inference.runtime import Outputs

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
Row = dict


def audio_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked (sorted) for AUDIO_SUFFIXES."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


class LocalScorer:
    """The model directory in this process: the same scores the server answers."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str,
        int8: bool | None,
        threads: int,
        max_seconds: float,
    ):
        from server.inference.runtime import Runtime

        self.runtime = Runtime.load(model_dir, device=device, int8=int8, threads=threads)
        self.max_seconds = max_seconds

    def __call__(
        self, path: Path, *, segment: bool, top_k: int | None, min_confidence: float = 0.0
    ) -> Row:
        runtime = self.runtime
        try:
            audio = load_audio(
                path.read_bytes(),  # as the server decodes it: same answers, same errors
                min_seconds=runtime.min_samples / SAMPLE_RATE,
                max_seconds=None if segment else self.max_seconds,
            )
        except AudioError as exc:
            hint = "; use --segment for long audio" if exc.code == "too_long" else ""
            return {"error": {"code": exc.code, "message": exc.message + hint}}
        row: Row = {"duration_s": scoring.seconds(len(audio))}
        if not segment:
            outputs = runtime.run_clips([audio])
            return row | self._scores(outputs, top_k, min_confidence)
        max_samples = int(self.max_seconds * SAMPLE_RATE)
        from server.inference.vad import segment_params, utterance_spans  # VAD loads here

        params = segment_params(Settings(), min_samples=runtime.min_samples)
        spans = utterance_spans(audio, max_samples, runtime.min_samples, params)
        answers = [runtime.run_clips([audio[s:e]]) for s, e in spans]
        segments = [
            {"start_s": scoring.seconds(s), "end_s": scoring.seconds(e)}
            | self._scores(outputs, top_k, min_confidence)
            for (s, e), outputs in zip(spans, answers, strict=True)
        ]
        summary = scoring.summary(
            runtime.labels,
            runtime.dimension_names,
            spans,
            [scoring.softmax(outputs.logits[0]) for outputs in answers],
            [None if o.dimensions is None else o.dimensions[0] for o in answers],
            top_k=top_k,
            min_confidence=min_confidence,
        )
        del summary["embedding"]  # not offered offline: rows stay small and CSV-friendly
        return row | summary | {"segments": segments}

    def _scores(self, outputs: Outputs, top_k: int | None, min_confidence: float) -> Row:
        """One utterance's row (the model's answer for a batch of one)."""
        runtime = self.runtime
        dimensions = None if outputs.dimensions is None else outputs.dimensions[0]
        row = scoring.scores(
            runtime.labels,
            scoring.softmax(outputs.logits[0]),
            top_k=top_k,
            min_confidence=min_confidence,
        ) | scoring.dimension_fields(runtime.dimension_names, dimensions)
        del row["embedding"]  # not offered offline: rows stay small and CSV-friendly
        return row


class RemoteScorer:
    """A running server's POST /predict, one file per request (the server batches them)."""

    def __init__(self, url: str, *, api_key: str | None, timeout_s: float = 300.0):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def __call__(
        self, path: Path, *, segment: bool, top_k: int | None, min_confidence: float = 0.0
    ) -> Row:
        import httpx

        params = {"segment": str(segment).lower(), "min_confidence": min_confidence}
        params |= {"top_k": top_k} if top_k else {}
        try:
            response = self.client.post("/predict", params=params, content=path.read_bytes())
        except httpx.HTTPError as exc:
            return {"error": {"code": "connection", "message": f"{type(exc).__name__}: {exc}"}}
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if response.status_code != 200:
            return {
                "error": body.get("error")
                or {"code": f"http_{response.status_code}", "message": response.text[:200]}
            }
        result = body["results"][0]
        drop = {"filename", "timings", "batch_size", "embedding"}
        row = {k: v for k, v in result.items() if k not in drop}
        if row.get("segments") is None:
            row.pop("segments", None)
        else:
            row["segments"] = [
                {k: v for k, v in s.items() if k not in drop} for s in row["segments"]
            ]
        return row


def score_all(
    files: list[Path], scorer: Callable[..., Row], *, workers: int, progress: bool, **options
) -> Iterator[Row]:
    """Rows in file order; ``workers`` > 1 keeps several files in flight (remote mode)."""

    def one(path: Path) -> Row:
        return {"path": str(path)} | scorer(path, **options)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        yield from tqdm(
            pool.map(one, files),
            total=len(files),
            unit="file",
            disable=not progress,
            file=sys.stderr,
        )


def write_jsonl(rows: Iterable[Row], out: TextIO) -> int:
    failed = 0
    for row in rows:
        failed += "error" in row
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return failed


def write_csv(
    rows: Iterable[Row],
    out: TextIO,
    labels: list[str] | None,
    dimensions: Sequence[str] | None = None,
) -> int:
    """One line per file, or per segment: path, start_s, end_s, label, confidence, uncertain,
    p_<label>..., the model's dimensions (if any) by name, error. Without ``labels`` and
    ``dimensions`` (remote mode), the first row names them."""
    writer = None
    failed = 0
    for row in rows:
        failed += "error" in row
        parts = row.get("segments") or [row]
        for part in parts:
            probs = part.get("probabilities") or {}
            affect = part.get("dimensions") or {}
            if writer is None:
                labels = labels or list(probs)
                dimensions = list(dimensions or affect)
                fields = [
                    "path",
                    "duration_s",
                    "start_s",
                    "end_s",
                    "label",
                    "confidence",
                    "uncertain",
                ]
                writer = csv.DictWriter(
                    out, fields + [f"p_{label}" for label in labels] + dimensions + ["error"]
                )
                writer.writeheader()
            error = row.get("error")
            writer.writerow(
                {
                    "path": row["path"],
                    "duration_s": row.get("duration_s"),
                    "start_s": part.get("start_s"),
                    "end_s": part.get("end_s"),
                    "label": part.get("label"),
                    "confidence": part.get("confidence"),
                    "uncertain": part.get("uncertain"),
                    "error": f"{error['code']}: {error['message']}" if error else "",
                }
                | {f"p_{label}": probs.get(label) for label in labels or []}
                | {name: affect.get(name) for name in dimensions or []}
            )
    return failed


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m server.score", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="score audio files or folders")
    p.add_argument(
        "paths", nargs="+", help=f"audio files or folders (walked for {' '.join(AUDIO_SUFFIXES)})"
    )
    p.add_argument(
        "--url", help="a running server (e.g. http://127.0.0.1:8000); default: run locally"
    )
    p.add_argument(
        "--out", type=Path, help="results.jsonl or results.csv (default: JSONL on stdout)"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=defaults["model_dir"].default,
        help="local mode (default %(default)s)",
    )
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        help="local mode: model.int8.onnx (--int8) or model.onnx (--no-int8); default: int8 "
        "when the export accepted it (as EMODISTILL_INT8=auto)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="local mode: ONNX Runtime threads (0 = all cores)"
    )
    p.add_argument("--segment", action="store_true", help="split long files into utterances (VAD)")
    p.add_argument("--top-k", type=int, help="also list the k most probable labels")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=defaults["min_confidence"].default,
        help="answers below this confidence say uncertain: true (default %(default)s = never)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=defaults["max_seconds"].default,
        help="longest clip without --segment",
    )
    p.add_argument("--api-key", help="remote mode: sent as Authorization: Bearer")
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        help="remote mode: files in flight (the server batches them)",
    )
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = audio_files(args.paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.url:
        scorer: Callable[..., Row] = RemoteScorer(args.url, api_key=args.api_key)
        labels, dimensions, workers = None, None, args.workers
    else:
        from emocore.model_dir import ModelDirError
        from server.inference.runtime import ProviderError

        try:
            scorer = LocalScorer(
                args.model_dir,
                device=args.device,
                int8=args.int8,
                threads=args.threads,
                max_seconds=args.max_seconds,
            )
        except (ModelDirError, ProviderError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        labels, dimensions, workers = scorer.runtime.labels, scorer.runtime.dimension_names, 1
    rows = score_all(
        files,
        scorer,
        workers=workers,
        progress=not args.no_progress,
        segment=args.segment,
        top_k=args.top_k,
        min_confidence=args.min_confidence,
    )
    out = args.out.open("w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        if args.out and args.out.suffix.lower() == ".csv":
            failed = write_csv(rows, out, labels, dimensions)
        else:
            failed = write_jsonl(rows, out)
    finally:
        if args.out:
            out.close()
    if failed:
        print(f"{failed} of {len(files)} files failed (see their error rows)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
