"""A synthetic emotional speech corpus from eSpeak NG, for the offline demo and the tests.

(Over 400 lines: the prosody recipe, the sentence plan, the dimension ratings and the writer
share one configuration and one random stream per utterance; split, each part would need the
others' internals.)

Emotion is carried by prosody (pitch level, pitch range, rate, loudness, pauses) and by words
(sentences with emotion-laden adjectives). Each modality carries the label only with a set
probability, independently, so some utterances carry it in one modality only and some in
neither, and the modalities can disagree: neither a text-only nor a prosody-only model can be
perfect. Eight voice variants act as speakers, each with its own prosodic offsets.

    python -m training.data.synthetic --out demo-corpus --n 400 --seed 0

writes ``wavs/<speaker>/<id>.wav`` (16 kHz mono PCM-16), ``manifest.csv``
(path,label,text,speaker,session,id,arousal,valence,dominance), ``metadata.jsonl`` (which
modality carries which emotion) and ``summary.json`` (counts per class and speaker, also printed).

Dimensional affect (1-5, as IEMOCAP's raters score it) is assigned from what each utterance
speaks (``plan_dimensions``): arousal mostly from its prosody (pitch, rate and volume relative
to the neutral recipe), valence from the emotion it is labelled with and the emotions its words
and prosody show, dominance from the emotion and the volume and rate. Each value gets Gaussian
noise (``DIMENSION_NOISE_SD`` = 0.3 scale points, like the spread between human raters) and is
clipped to 1-5. The noise comes from its own random stream, so the utterances themselves (text,
prosody, audio) are the same as before the dimensions existed, and ``add_dimensions`` writes
them into an older corpus's manifest without rendering any audio again.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from emocore.audio import SAMPLE_RATE, resample
from training.data.espeak import Prosody, synthesize
from training.data.utterance import (
    DIMENSION_MEANS,
    DIMENSION_SCALE,
    DIMENSIONS,
    EMOTIONS,
    Utterance,
)

MANIFEST_NAME = "manifest.csv"
METADATA_NAME = "metadata.jsonl"
SUMMARY_NAME = "summary.json"
MANIFEST_COLUMNS = ("path", "label", "text", "speaker", "session", "id", *DIMENSIONS)
# Plans sent to the synthesis process at a time (fewer round trips, a smooth progress bar).
RENDER_CHUNK = 8


@dataclass(frozen=True)
class EmotionProsody:
    """One emotion's prosody: eSpeak pitch/range (0-100), rate (wpm), volume (%), pause (ms)."""

    pitch: float
    range: float
    rate: float
    volume: float
    pause_ms: float


# Settings measured to move F0 and loudness as intended with eSpeak NG 1.52 (e.g. neutral
# ~100 Hz, happy ~145 Hz with a wider range, sad ~71 Hz, narrow and quiet); the range values are eSpeak's 0-100 scale for +0%, +70%, +35%, -60% around the default 50.
DEFAULT_PROSODY: dict[str, EmotionProsody] = {
    "neutral": EmotionProsody(pitch=50, range=50, rate=165, volume=100, pause_ms=250),
    "happy": EmotionProsody(pitch=68, range=85, rate=185, volume=125, pause_ms=150),
    "angry": EmotionProsody(pitch=56, range=68, rate=200, volume=160, pause_ms=80),
    "sad": EmotionProsody(pitch=32, range=20, rate=130, volume=70, pause_ms=550),
}

DEFAULT_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "neutral": ("informed", "aware", "certain", "clear", "told", "notified"),
    "happy": ("happy", "delighted", "thrilled", "excited", "glad", "overjoyed"),
    "angry": ("angry", "furious", "outraged", "livid", "annoyed", "mad"),
    "sad": ("sad", "heartbroken", "miserable", "depressed", "gloomy", "devastated"),
}

# {pause} marks the phrase boundary where the emotion's pause goes.
DEFAULT_TEMPLATES = (
    "I am so {adj} about the {topic}.",
    "Honestly,{pause} I feel {adj} about the {topic}.",
    "The {topic}{pause} makes me {adj}.",
    "You know,{pause} I was {adj} when I heard about the {topic}.",
    "Everyone is {adj} about the {topic},{pause} and so am I.",
)

DEFAULT_TOPICS = (
    "meeting", "results", "news", "weekend", "letter", "trip", "decision", "phone call",
)  # fmt: skip

# Dimensional affect: each emotion's anchor (DIMENSION_MEANS, near IEMOCAP's class means); how
# far the spoken pitch, rate and volume move arousal and dominance (scale points per unit of
# ``PROSODY_SPREAD`` away from the neutral recipe); rater-like noise.
DIMENSION_ANCHORS = DIMENSION_MEANS
PROSODY_SPREAD = {"pitch": 18.0, "rate": 35.0, "volume": 60.0}
AROUSAL_PROSODY = {"pitch": 0.25, "rate": 0.35, "volume": 0.4}
DOMINANCE_PROSODY = {"pitch": 0.0, "rate": 0.1, "volume": 0.3}
DIMENSION_NOISE_SD = 0.3

# Interleaved by gender, so that when n does not divide evenly both genders get the extras.
DEFAULT_VOICES = tuple(f"en-us+{v}" for v in ("m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4"))


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the corpus in one place (defaults: the recipe above)."""

    n: int = 400
    seed: int = 0
    voices: tuple[str, ...] = DEFAULT_VOICES
    labels: tuple[str, ...] = EMOTIONS
    # P(the words carry the label); otherwise they are neutral.
    p_words: float = 0.6
    # P(the prosody carries the label); otherwise it is another emotion's prosody.
    p_prosody: float = 0.7
    prosody: dict[str, EmotionProsody] = field(default_factory=lambda: dict(DEFAULT_PROSODY))
    adjectives: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ADJECTIVES))
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    topics: tuple[str, ...] = DEFAULT_TOPICS
    # Per-speaker offsets: uniform in +-these (pitch, range, rate, volume, pause_ms) ...
    speaker_offset: EmotionProsody = EmotionProsody(6, 8, 12, 10, 40)
    # ... and per-utterance Gaussian jitter with these standard deviations.
    jitter_sd: EmotionProsody = EmotionProsody(5, 8, 10, 12, 40)
    # The emotion words carry when they do not carry the label.
    fallback_words: str = "neutral"
    # Utterance ids are PREFIX_SEED_INDEX: corpora that are used together need their own prefix.
    id_prefix: str = "synth"

    def __post_init__(self) -> None:
        if self.n < len(self.labels) or self.n % len(self.labels):
            raise ValueError(
                f"n={self.n} must be a positive multiple of {len(self.labels)} (balanced classes)"
            )
        for name, p in (("p_words", self.p_words), ("p_prosody", self.p_prosody)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}={p} is not a probability")
        for table in (self.prosody, self.adjectives):
            missing = set(self.labels) - set(table)
            if missing:
                raise ValueError(f"no entry for {sorted(missing)} in {sorted(table)}")


@dataclass(frozen=True)
class Plan:
    """What one utterance is meant to carry: recorded in metadata.jsonl for analysis."""

    id: str
    label: str
    speaker: str
    text: str
    ssml: str  # the text with the emotion's pause as an SSML break
    words_emotion: str
    prosody_emotion: str
    prosody: Prosody
    pause_ms: int
    # (arousal, valence, dominance) on DIMENSION_SCALE; None for labels without an anchor
    dimensions: tuple[float, float, float] | None = None

    @property
    def words_carry(self) -> bool:
        return self.words_emotion == self.label

    @property
    def prosody_carries(self) -> bool:
        return self.prosody_emotion == self.label


def _fields(p: EmotionProsody) -> np.ndarray:
    return np.array([p.pitch, p.range, p.rate, p.volume, p.pause_ms], dtype=np.float64)


def speaker_name(voice: str) -> str:
    return voice.replace("+", "_").replace("-", "")


def plan_dimensions(
    plan: Plan, neutral: EmotionProsody, rng: np.random.Generator
) -> tuple[float, float, float] | None:
    """(arousal, valence, dominance) of what ``plan`` speaks: the anchors of its label (arousal
    and dominance half, valence half) and of the emotions its words and prosody show (valence
    a quarter each), arousal and dominance moved by its pitch, rate and volume relative to
    ``neutral``; plus noise, clipped to the scale, 2 decimals."""
    emotions = (plan.label, plan.words_emotion, plan.prosody_emotion)
    if any(e not in DIMENSION_ANCHORS for e in emotions):
        return None
    label, words, prosodic = (np.array(DIMENSION_ANCHORS[e]) for e in emotions)
    spoken = {"pitch": plan.prosody.pitch, "rate": plan.prosody.rate, "volume": plan.prosody.volume}
    z = {k: (spoken[k] - getattr(neutral, k)) / PROSODY_SPREAD[k] for k in spoken}
    neutral_anchor = np.array(DIMENSION_ANCHORS["neutral"])
    arousal = 0.5 * (label[0] + neutral_anchor[0]) + sum(AROUSAL_PROSODY[k] * z[k] for k in z)
    valence = 0.5 * label[1] + 0.25 * words[1] + 0.25 * prosodic[1]
    dominance = 0.5 * (label[2] + neutral_anchor[2]) + sum(DOMINANCE_PROSODY[k] * z[k] for k in z)
    values = np.array([arousal, valence, dominance]) + rng.normal(0, DIMENSION_NOISE_SD, 3)
    low, high = DIMENSION_SCALE
    return tuple(round(float(v), 2) for v in np.clip(values, low, high))


def with_dimensions(plans: list[Plan], config: SyntheticConfig) -> list[Plan]:
    """The plans with their dimensions, drawn from a random stream of their own (seeded by the
    corpus seed), so adding them changed nothing else about the corpus."""
    rng = np.random.default_rng([config.seed, 7])
    neutral = config.prosody.get("neutral", DEFAULT_PROSODY["neutral"])
    return [dataclasses.replace(p, dimensions=plan_dimensions(p, neutral, rng)) for p in plans]


def plan_corpus(config: SyntheticConfig) -> list[Plan]:
    """Decide every utterance (label, speaker, words, prosody, dimensions) from the seed alone."""
    rng = np.random.default_rng(config.seed)
    offsets = {
        voice: rng.uniform(-1, 1, 5) * _fields(config.speaker_offset) for voice in config.voices
    }
    n_labels, n_voices = len(config.labels), len(config.voices)
    plans = []
    for i in range(config.n):
        # Classes cycle fastest, voices next: balanced classes, and every voice says every class.
        label = config.labels[i % n_labels]
        voice = config.voices[(i // n_labels) % n_voices]
        words = label if rng.random() < config.p_words else config.fallback_words
        if rng.random() < config.p_prosody:
            prosodic = label
        else:
            prosodic = str(rng.choice([e for e in config.labels if e != label]))
        values = _fields(config.prosody[prosodic]) + offsets[voice]
        values += rng.normal(0, 1, 5) * _fields(config.jitter_sd)
        pitch, rng_range, rate, volume, pause = (int(round(v)) for v in values)
        template = config.templates[rng.integers(len(config.templates))]
        adjective = config.adjectives[words][rng.integers(len(config.adjectives[words]))]
        topic = config.topics[rng.integers(len(config.topics))]
        pause_ms = max(0, pause)
        plans.append(
            Plan(
                id=f"{config.id_prefix}_{config.seed}_{i:05d}",
                label=label,
                speaker=speaker_name(voice),
                text=template.format(adj=adjective, topic=topic, pause=""),
                ssml=template.format(
                    adj=adjective, topic=topic, pause=f'<break time="{pause_ms}ms"/>'
                ),
                words_emotion=words,
                prosody_emotion=prosodic,
                prosody=Prosody(pitch, rng_range, rate, volume).clipped(),
                pause_ms=pause_ms,
            )
        )
    return with_dimensions(plans, config)


def render(plan: Plan, voice: str) -> np.ndarray:
    """Synthesise one planned utterance -> 16 kHz float32 in [-1, 1]."""
    samples, rate = synthesize(plan.ssml, voice, plan.prosody)
    return np.clip(resample(samples, rate, SAMPLE_RATE), -1.0, 1.0)


def _render_to_file(job: tuple[Plan, str, Path]) -> float:
    plan, voice, path = job
    samples = render(plan, voice)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return len(samples) / SAMPLE_RATE


def generate(config: SyntheticConfig, out: str | Path, progress: bool = True) -> dict:
    """Write the corpus into ``out``; returns the summary (also written to summary.json)."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    voices = {speaker_name(v): v for v in config.voices}
    plans = plan_corpus(config)
    rel_paths = [Path("wavs") / p.speaker / f"{p.id}.wav" for p in plans]
    jobs = [(p, voices[p.speaker], out / rel) for p, rel in zip(plans, rel_paths, strict=True)]
    # eSpeak's wave generator keeps state across calls (pitch flutter phase, ...), so output
    # depends on what the process synthesised before. A fresh process that renders the plans
    # in order makes the audio a function of the config alone (deterministic per seed).
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        seconds = list(
            tqdm(
                pool.map(_render_to_file, jobs, chunksize=RENDER_CHUNK),
                total=len(jobs),
                desc="synthesising",
                unit="utt",
                disable=not progress,
            )
        )
    rows, metadata = [], []
    for plan, rel, secs in zip(plans, rel_paths, seconds, strict=True):
        rows.append(manifest_row(plan, rel))
        metadata.append(
            {
                "id": plan.id,
                "path": rel.as_posix(),
                "label": plan.label,
                "words_emotion": plan.words_emotion,
                "prosody_emotion": plan.prosody_emotion,
                "words_carry": plan.words_carry,
                "prosody_carries": plan.prosody_carries,
                "prosody": asdict(plan.prosody),
                "pause_ms": plan.pause_ms,
                "seconds": round(secs, 3),
            }  # fmt: skip
        )
    write_manifest(out / MANIFEST_NAME, rows)
    (out / METADATA_NAME).write_text(
        "".join(json.dumps(m) + "\n" for m in metadata), encoding="utf-8"
    )
    summary = summarize(metadata, rows, config)
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def manifest_row(plan: Plan, rel: Path) -> dict:
    dims = dict(zip(DIMENSIONS, plan.dimensions, strict=True)) if plan.dimensions else {}
    return {
        "path": rel.as_posix(), "label": plan.label, "text": plan.text,
        "speaker": plan.speaker, "session": plan.speaker, "id": plan.id,
        **{d: dims.get(d, "") for d in DIMENSIONS},
    }  # fmt: skip


def write_manifest(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def has_dimensions(root: Path) -> bool:
    """Whether the corpus's manifest has the dimension columns."""
    with (Path(root) / MANIFEST_NAME).open(newline="", encoding="utf-8") as handle:
        return set(DIMENSIONS) <= set(next(csv.reader(handle), []))


def add_dimensions(config: SyntheticConfig, root: Path) -> None:
    """Rewrite an older corpus's manifest with the dimension columns (the plans are a function
    of ``config``; the audio is not touched). Rows must match the plans one to one."""
    root = Path(root)
    with (root / MANIFEST_NAME).open(newline="", encoding="utf-8") as handle:
        old = list(csv.DictReader(handle))
    plans = plan_corpus(config)
    if [(r["id"], r["text"]) for r in old] != [(p.id, p.text) for p in plans]:
        raise ValueError(f"{root}: the manifest's utterances are not this config's plans")
    rows = [manifest_row(p, Path(r["path"])) for p, r in zip(plans, old, strict=True)]
    write_manifest(root / MANIFEST_NAME, rows)


CARRIERS = ("both", "words_only", "prosody_only", "neither")


def carrier(words_carry: bool, prosody_carries: bool) -> str:
    """Which modality carries an utterance's label (one of ``CARRIERS``)."""
    if words_carry:
        return "both" if prosody_carries else "words_only"
    return "prosody_only" if prosody_carries else "neither"


def with_carriers(utterances: list[Utterance], root: Path) -> list[Utterance]:
    """The utterances with ``extra["carrier"]`` from the corpus's metadata.jsonl (when present),
    so results can be broken down by what carries the label."""
    path = root / METADATA_NAME
    if not path.is_file():
        return utterances
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    carriers = {r["id"]: carrier(r["words_carry"], r["prosody_carries"]) for r in rows}
    return [
        dataclasses.replace(u, extra={**u.extra, "carrier": carriers[u.id]})
        if u.id in carriers
        else u
        for u in utterances
    ]


def summarize(metadata: list[dict], rows: list[dict], config: SyntheticConfig) -> dict:
    """Counts per class, per speaker and per (class, speaker), and how the modalities behave."""
    n = len(metadata)
    words = sum(m["words_carry"] for m in metadata)
    prosody = sum(m["prosody_carries"] for m in metadata)
    both = sum(m["words_carry"] and m["prosody_carries"] for m in metadata)
    # Disagree: the words show one emotion and the prosody a different one.
    disagree = sum(m["words_emotion"] != m["prosody_emotion"] for m in metadata)
    per_pair = Counter(f"{r['label']}/{r['speaker']}" for r in rows)
    return {
        "n": n,
        "seed": config.seed,
        "seconds": round(sum(m["seconds"] for m in metadata), 1),
        "per_class": dict(sorted(Counter(r["label"] for r in rows).items())),
        "per_speaker": dict(sorted(Counter(r["speaker"] for r in rows).items())),
        "per_class_speaker": dict(sorted(per_pair.items())),
        "modalities": {
            "words_carry": words / n,
            "prosody_carries": prosody / n,
            "both_carry": both / n,
            "words_only": (words - both) / n,
            "prosody_only": (prosody - both) / n,
            "neither": (n - words - prosody + both) / n,
            "words_prosody_disagree": disagree / n,
        },
        "config": {
            "p_words": config.p_words,
            "p_prosody": config.p_prosody,
            "voices": list(config.voices),
        },
    }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['n']} utterances, {summary['seconds']} s of audio (seed {summary['seed']})"]
    lines.append("per class:   " + ", ".join(f"{k} {v}" for k, v in summary["per_class"].items()))
    lines.append("per speaker: " + ", ".join(f"{k} {v}" for k, v in summary["per_speaker"].items()))
    lines.append(
        "modalities:  " + ", ".join(f"{k} {v:.0%}" for k, v in summary["modalities"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=defaults.n, help="utterances (a multiple of 4)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--p-words", type=float, default=defaults.p_words)
    parser.add_argument("--p-prosody", type=float, default=defaults.p_prosody)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = SyntheticConfig(
        n=args.n, seed=args.seed, p_words=args.p_words, p_prosody=args.p_prosody
    )
    summary = generate(config, args.out, progress=not args.quiet)
    print(format_summary(summary))
    print(f"manifest: {args.out / MANIFEST_NAME}")


if __name__ == "__main__":
    main()
