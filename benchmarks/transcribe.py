"""What Whisper's transcripts are worth to EmoDistill: their word error rate (WER) on speech
whose words are known, the engines' speed, and the teachers and students trained on them.

1. **Engines** (``--engine-clips`` per corpus, the first of each sample below): for each model,
   CTranslate2 (float32 and int8, reading the bundle as it is), transformers (the converted
   checkpoint's ``generate``) and faster-whisper (``WhisperModel.transcribe``, per clip) on the
   same clips: WER, seconds per audio minute (the model loaded before the clock starts) and
   how many clips each gives the same text as CTranslate2 float32. All decode greedily.
   The fastest engine whose WER is within ``EQUAL_WER`` of the slowest's is *chosen*; the
   training stage's default (``asr_engine=auto``, ``asr_compute_type=auto``) is CTranslate2
   with the compute type this picks on a CPU.
2. **WER per corpus** (``--clips`` per corpus, spread evenly over the clip lengths with
   ``training.stages.data.capped``), for each model with the chosen engine: the synthetic demo
   corpus (its manifest's texts), the Asterisk prompts (Debian asterisk-core-sounds-en-wav; the
   texts of core-sounds-en.txt from asterisk-core-sounds-en; tones and silence left out),
   RAVDESS (the two statements) and TESS ("Say the word ..."), the texts the adapters in
   training/data give.
3. **Teachers and students** (``--gt-run``, ``--asr-run``): two demo runs of the same fold and
   seeds, one on the corpus's own texts and one with ``--transcribe=all``: the linguistic
   teacher's test UA (seed 0 from the run; ``--teacher-seeds`` more are trained here on the
   run's own fold files), the students' test UA (best-validation and last epoch, per seed), the
   WER of the ASR run's transcripts on all its utterances, and its transcribe stage's cost.

WER: ``jiwer`` over all clips of a set (word edits / reference words) after a normalisation of
both sides: "plain" = lower case, punctuation removed, whitespace collapsed (jiwer's
transforms); "whisper" = Whisper's English normaliser first (transformers'
``EnglishTextNormalizer``: numbers as digits, contractions and spellings unified), then the
same. The JSON (default benchmarks/results/transcribe.json) records the command, the date, the
load average and the commit; benchmarks/tables_transcribe.py renders it.

    python benchmarks/transcribe.py --gt-run runs/asr-gt --asr-run runs/asr-whisper
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.real_voices import record_header  # noqa: E402
from emocore.audio import SAMPLE_RATE, load_audio  # noqa: E402
from training.data.corpora import find_corpora  # noqa: E402
from training.data.manifest import load_manifest  # noqa: E402
from training.data.ravdess import scan_ravdess  # noqa: E402
from training.data.synthetic import MANIFEST_NAME  # noqa: E402
from training.data.tess import scan_tess  # noqa: E402
from training.data.utterance import Utterance  # noqa: E402
from training.stages.data import capped  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "transcribe.json"
ASTERISK = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TEXTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SYNTHETIC = ROOT / "data" / "synthetic-demo"
MODELS = ("whisper-tiny.en", "whisper-base")
# (name, engine, compute type): what the engines section compares, the reference first.
ENGINES = (
    ("ctranslate2 float32", "ctranslate2", "float32"),
    ("ctranslate2 int8", "ctranslate2", "int8"),
    ("transformers", "transformers", "auto"),
    ("faster-whisper", "faster-whisper", "float32"),
)
EQUAL_WER = 0.01  # "equal WER": within one point of the reference's on the same clips
log = logging.getLogger("benchmarks.transcribe")


# ---- the speech with known words --------------------------------------------------------------


def asterisk_utterances(root: Path = ASTERISK, texts: Path = ASTERISK_TEXTS) -> list[Utterance]:
    """Every prompt whose text the package lists, except tones ("[beep tone]") and silence."""
    import soundfile as sf

    if not texts.is_file() or not root.is_dir():
        return []
    utts = []
    for line in gzip.open(texts, "rt", encoding="utf-8"):
        name, sep, text = line.strip().partition(": ")
        path = root / f"{name}.wav"
        if not sep or line.startswith(";") or text.startswith("[") or not path.is_file():
            continue
        if name.startswith("silence/"):
            continue
        duration = sf.info(str(path)).duration
        utts.append(Utterance(f"asterisk/{name}", str(path), "", text, duration=duration))
    return utts


def corpora_utterances(corpora_dir: Path | None) -> dict[str, list[Utterance]]:
    """{corpus: utterances with their known texts}; a corpus that is not found is left out."""
    found = {"synthetic": []}
    if (SYNTHETIC / MANIFEST_NAME).is_file():
        found["synthetic"] = [
            replace(u, id=f"synthetic/{u.id}") for u in load_manifest(SYNTHETIC / MANIFEST_NAME)
        ]
    found["asterisk"] = asterisk_utterances()
    roots = find_corpora(("ravdess", "tess"), corpora_dir)
    for name, scan in (("ravdess", scan_ravdess), ("tess", scan_tess)):
        found[name] = scan(roots[name])[0] if roots[name] else []
    for name, utts in found.items():
        if not utts:
            print(f"{name}: not found, left out")
    return {name: utts for name, utts in found.items() if utts}


# ---- WER ----------------------------------------------------------------------------------------


def normalisers() -> dict[str, Callable[[str], str]]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    whisper = EnglishTextNormalizer({})
    return {"plain": lambda text: text, "whisper": whisper}


def words(text: str) -> list[str]:
    """The plain normalisation's words: lower case, no punctuation."""
    import jiwer

    return jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation()])(text).split()


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """{"plain": WER, "whisper": WER, "words": reference words} over the whole set."""
    import jiwer

    plain = jiwer.Compose([
        jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(), jiwer.ReduceToListOfListOfWords(),
    ])  # fmt: skip
    out: dict[str, float] = {}
    for name, normalise in normalisers().items():
        refs = [normalise(r) for r in references]
        hyps = [normalise(h) for h in hypotheses]
        kept = [i for i, r in enumerate(refs) if plain([r])[0]]  # a reference with words
        words = jiwer.process_words(
            [refs[i] for i in kept], [hyps[i] for i in kept], plain, plain
        )  # fmt: skip
        out[name] = round(words.wer, 4)
        if name == "plain":
            out["words"] = words.hits + words.substitutions + words.deletions
    return out


# ---- the engines --------------------------------------------------------------------------------


class FasterWhisper:
    """faster-whisper's ``WhisperModel`` on the bundle's CTranslate2 folder, one clip a call."""

    def __init__(self, model: str, threads: int, compute_type: str):
        from faster_whisper import WhisperModel

        from training.asr.whisper import ct2_model_dir

        self.model = WhisperModel(
            str(ct2_model_dir(model)), device="cpu", compute_type=compute_type, cpu_threads=threads
        )

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[str]:
        texts = []
        for clip in clips:
            segments, _ = self.model.transcribe(
                clip, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                condition_on_previous_text=False, vad_filter=False,
            )  # fmt: skip
            texts.append(" ".join(s.text.strip() for s in segments))
        return texts


def load(model: str, engine: str, compute_type: str, threads: int):
    if engine == "faster-whisper":
        return FasterWhisper(model, threads, compute_type)
    from training.asr.whisper import load_whisper

    return load_whisper(model, engine, "cpu", threads, "en", compute_type)


def transcribe(whisper, clips: list[np.ndarray], batch_size: int) -> tuple[list[str], float]:
    """(texts, seconds): batches of similar lengths, longest first, as the training stage."""
    order = sorted(range(len(clips)), key=lambda i: -len(clips[i]))
    texts = [""] * len(clips)
    started = time.monotonic()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        for i, text in zip(rows, whisper.transcribe([clips[i] for i in rows]), strict=True):
            texts[i] = text
    return texts, time.monotonic() - started


def measure(
    model: str,
    engine: tuple[str, str, str],
    sample: list[Utterance],
    clips: list[np.ndarray],
    args: argparse.Namespace,
) -> tuple[dict, list[str]]:
    name, kind, compute_type = engine
    started = time.monotonic()
    whisper = load(model, kind, compute_type, args.threads)
    loaded = time.monotonic() - started
    whisper.transcribe(clips[:1])  # warm-up, untimed: first-call allocations
    texts, seconds = transcribe(whisper, clips, args.batch_size)
    minutes = sum(len(c) for c in clips) / SAMPLE_RATE / 60
    row = {
        "engine": name,
        "clips": len(clips),
        "audio_minutes": round(minutes, 2),
        "seconds": round(seconds, 1),
        "load_seconds": round(loaded, 1),
        "seconds_per_audio_minute": round(seconds / minutes, 2),
        "wer": wer([u.transcript for u in sample], texts),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(
        f"  {model} {name}: WER {row['wer']['plain']:.3f} / {row['wer']['whisper']:.3f}, "
        f"{row['seconds_per_audio_minute']:.1f} s per audio minute ({len(clips)} clips, "
        f"load {row['load_avg_1m']})",
        flush=True,
    )
    return row, texts


def choose(rows: list[dict]) -> str:
    """The fastest engine whose WER (plain) is within EQUAL_WER of the reference's (first)."""
    reference = rows[0]["wer"]["plain"]
    equal = [r for r in rows if r["wer"]["plain"] <= reference + EQUAL_WER]
    return min(equal, key=lambda r: r["seconds_per_audio_minute"])["engine"]


def engines_section(
    models: Sequence[str], samples: dict[str, list[Utterance]], args: argparse.Namespace
) -> tuple[dict, dict]:
    """({model: [row per engine]}, {model: chosen engine name})."""
    chosen_clips = [u for utts in samples.values() for u in utts[: args.engine_clips]]
    clips = [load_audio(u.audio_path) for u in chosen_clips]
    rows, chosen = {}, {}
    for model in models:
        print(f"engines, {model}: {len(clips)} clips", flush=True)
        rows[model], reference = [], None
        for engine in ENGINES:
            row, texts = measure(model, engine, chosen_clips, clips, args)
            reference = reference or texts
            row["same_text"] = sum(
                a.strip() == b.strip() for a, b in zip(reference, texts, strict=True)
            )
            rows[model].append(row)
        chosen[model] = choose(rows[model])
        print(f"  chosen for {model}: {chosen[model]}", flush=True)
    return rows, chosen


def corpora_section(
    models: Sequence[str],
    samples: dict[str, list[Utterance]],
    chosen: dict[str, str],
    args: argparse.Namespace,
) -> dict:
    """{model: {corpus: the chosen engine's row on the corpus's sample, + misheard examples}}."""
    out: dict = {}
    for model in models:
        engine = next(e for e in ENGINES if e[0] == chosen[model])
        out[model] = {}
        for corpus, sample in samples.items():
            print(f"WER, {model} on {corpus}: {len(sample)} clips", flush=True)
            clips = [load_audio(u.audio_path) for u in sample]
            row, texts = measure(model, engine, sample, clips, args)
            misheard = [
                {"id": u.id, "said": u.transcript, "heard": text}
                for u, text in zip(sample, texts, strict=True)
                if wer([u.transcript], [text])["whisper"] > 0
            ]
            row["misheard"] = sorted(misheard, key=lambda m: len(m["said"]))[:3]
            out[model][corpus] = row
    return out


# ---- teachers and students on given vs Whisper's transcripts -----------------------------------


def mean_std(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "values": [round(v, 4) for v in values],
    }


def teacher_seeds(run: Path, seeds: Sequence[int]) -> list[dict]:
    """The run's linguistic teacher (its own seed) and one more per seed of ``seeds``, trained
    on the run's fold files with its configuration (``RUN/benchmark/ling-seed<k>``; reused
    when there)."""
    from training.config import Config, apply
    from training.stages.data import read_fold
    from training.stages.teachers import fit_teacher

    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    cfg = apply(Config(), saved)
    (fold_dir,) = (run / "folds").iterdir()
    parts = read_fold(fold_dir)
    rows = [{"seed": cfg.seed, **_teacher(fold_dir / "teachers" / "ling" / "metrics.json")}]
    for seed in seeds:
        if seed == cfg.seed:
            continue
        tdir = run / "benchmark" / f"ling-seed{seed}"
        tdir.mkdir(parents=True, exist_ok=True)
        fit_teacher(apply(cfg, {"seed": seed, "threads": 1}), "ling", parts, None, tdir, "cpu",
                    f"ling teacher seed {seed}")  # fmt: skip
        rows.append({"seed": seed, **_teacher(tdir / "metrics.json")})
    return rows


def _teacher(path: Path) -> dict:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return {"test_ua": metrics["test"]["ua"], "valid_ua": metrics["valid"]["ua"]}


def run_summary(run: Path, seeds: Sequence[int]) -> dict:
    """A demo run's teachers, students (per seed) and transcript sources."""
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    students = sorted(metrics["students"], key=lambda s: s["seed"])
    teachers = teacher_seeds(run, seeds)
    config = metrics["config"]
    return {
        "run": run.name,
        "transcribe": config.get("transcribe", "missing"),
        "asr_model": config.get("asr_model"),
        "transcripts": metrics.get("transcripts", {}).get("sources", {}),
        "variant": students[0]["variant"],
        "seeds": [s["seed"] for s in students],
        "ling_teacher": {
            key: mean_std([t[key] for t in teachers]) for key in ("test_ua", "valid_ua")
        }
        | {"seeds": [t["seed"] for t in teachers]},
        "pros_teacher_test_ua": metrics["teachers"][0]["pros"]["test"]["ua"],
        "student_test_best": mean_std([s["test_best"]["ua"] for s in students]),
        "student_test_last": mean_std([s["test_last"]["ua"] for s in students]),
        "student_valid_best": mean_std([s["best_valid_ua"] for s in students]),
        "words_only_best": mean_std([s["subsets_best"]["words_only"]["ua"] for s in students]),
        "seconds": metrics["seconds"],
    }


def distill_section(gt: Path, asr: Path, seeds: Sequence[int]) -> dict:
    from training.runs import read_stages

    given = {u.id: u.transcript for u in load_manifest(SYNTHETIC / MANIFEST_NAME)}
    heard = load_manifest(asr / "manifest.csv")
    ids = [u.id for u in heard]
    (stage,) = [r for r in read_stages(asr) if r["stage"] == "transcribe" and r.get("transcribed")]
    (fold_dir,) = (asr / "folds").iterdir()
    test = {json.loads(line)["id"] for line in (fold_dir / "test.jsonl").read_text().splitlines()}
    return {
        "given": run_summary(gt, seeds),
        "asr": run_summary(asr, seeds),
        "transcript_wer": wer([given[i] for i in ids], [u.transcript for u in heard])
        | {"clips": len(ids)},
        "transcript_wer_test": wer(
            [given[u.id] for u in heard if u.id in test],
            [u.transcript for u in heard if u.id in test],
        )
        | {"clips": len(test)},
        "stage": {
            key: stage.get(key)
            for key in (
                "transcribed",
                "audio_minutes",
                "seconds",
                "load_seconds",
                "seconds_per_audio_minute",
                "whisper",
            )
        },  # fmt: skip
    }


# ---- the record --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=("all", "asr", "distill"),
        default="all",
        help="asr: engines and WER per corpus; distill: the two runs; all: both. A part "
        "replaces its own record in --out and keeps the other's",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--clips", type=int, default=48, help="clips per corpus for WER")
    parser.add_argument(
        "--engine-clips", type=int, default=6, help="clips per corpus for the engine comparison"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per engine")
    parser.add_argument(
        "--corpora", type=Path, help="searched first for ravdess/, tess/ (then $EMODISTILL_CORPORA)"
    )
    parser.add_argument("--gt-run", type=Path, help="demo run on the corpus's own texts")
    parser.add_argument("--asr-run", type=Path, help="the same with --transcribe=all")
    parser.add_argument("--teacher-seeds", default="0,1,2", help="linguistic teacher seeds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.part in ("all", "distill") and not (args.gt_run and args.asr_run):
        parser.error(f"--part {args.part} needs --gt-run and --asr-run")
    return args


def warm_imports() -> None:
    """Import what the engines import, so that no engine's load time carries it."""
    import ctranslate2  # noqa: F401
    import faster_whisper  # noqa: F401
    from transformers import WhisperForConditionalGeneration  # noqa: F401

    import training.asr.whisper  # noqa: F401


def asr_part(args: argparse.Namespace) -> dict:
    """The engines and the WER per corpus."""
    warm_imports()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    found = corpora_utterances(args.corpora)
    samples = {name: capped(utts, args.clips) for name, utts in found.items()}
    part: dict = {"threads": args.threads, "batch_size": args.batch_size, "equal_wer": EQUAL_WER}
    part["samples"] = {
        name: {
            "clips": len(samples[name]),
            "of": len(found[name]),
            "audio_minutes": round(sum(u.duration for u in samples[name]) / 60, 2),
        }
        for name in samples
    }
    part["engines"], part["chosen"] = engines_section(models, samples, args)
    part["wer"] = corpora_section(models, samples, part["chosen"], args)
    return part


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    command = "python benchmarks/transcribe.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    report = (
        json.loads(args.out.read_text(encoding="utf-8"))
        if args.part != "all" and args.out.is_file()
        else {}
    )
    for name in ("asr", "distill") if args.part == "all" else (args.part,):
        started = time.monotonic()
        record = record_header(command)
        if name == "asr":
            record |= asr_part(args)
        else:
            seeds = [int(s) for s in args.teacher_seeds.split(",") if s.strip()]
            record |= distill_section(args.gt_run, args.asr_run, seeds)
        record["machine"]["load_avg_after"] = list(os.getloadavg())
        record["seconds"] = round(time.monotonic() - started, 1)
        report[name] = record
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print_views(report)
    return 0


def print_views(report: dict) -> None:
    from benchmarks import tables_transcribe as views

    shown = [views.transcribe_wer, views.transcribe_engines] if "asr" in report else []
    for view in [*shown, views.transcribe_distill] if "distill" in report else shown:
        print("\n".join(view(report)), end="\n\n")


if __name__ == "__main__":
    sys.exit(main())
