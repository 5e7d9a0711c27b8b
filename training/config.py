"""The training configuration: one dataclass, named presets, a config file and ``--key=value``.

Precedence (later wins): the dataclass defaults, the preset (``--preset``, default ``demo``; a
preset may ``extends = "other"`` and change only some keys), a
config file (``--config FILE``, JSON or TOML, flat keys), then ``--key=value`` overrides. Every
override is type-checked against the field's annotation; unknown keys are errors that name the
closest known keys. The final configuration is saved as ``RUN/config.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from training.asr import COMPUTE_TYPES as ASR_COMPUTE_TYPES
from training.asr import ENGINES as ASR_ENGINES
from training.data import DATASET_KINDS
from training.data.splits import PROTOCOLS
from training.data.utterance import EMOTIONS
from training.fit.losses import TEACHER_WEIGHTINGS, VARIANTS

PRESETS_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration problem a user can fix (unknown key, bad type or value)."""


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


def _list(text: str, default: list):
    return field(default_factory=lambda: list(default), metadata={"help": text})


@dataclass
class Config:
    # --- data -------------------------------------------------------------------------------
    dataset: str = _help(" | ".join(DATASET_KINDS), "synthetic")
    data_path: str = _help(
        "dataset root / manifest file / synthetic corpus dir; ravdess, tess: the corpus folder "
        "(empty = look it up); corpora: several, e.g. 'ravdess,tess,synthetic=DIR'",
        "data/synthetic",
    )
    corpora_dir: str = _help(
        "folder holding ravdess/ and tess/, searched before $EMODISTILL_CORPORA and data/corpora",
        "",
    )
    protocol: str = _help(
        "loso | lospk | speakers | manifest | corpus (each corpus's own held-out speakers) | "
        "final (all speakers train one model for export, for `epochs` epochs, no validation or "
        "test; see training.data.splits)",
        "speakers",
    )
    folds: str = _help("'first', 'all', or comma-separated fold names", "first")
    valid_speakers: int = _help("speakers held out of each training part for validation", 2)
    labels: list[str] = _list("class labels in model output order", EMOTIONS)
    synth_n: int = _help("synthetic corpus: utterances (generated into data_path if missing)", 960)
    synth_seed: int = _help("synthetic corpus: generator seed", 0)
    synth_p_words: float = _help("synthetic corpus: P(the words carry the label)", 0.6)
    synth_p_prosody: float = _help("synthetic corpus: P(the prosody carries the label)", 0.7)
    synth_voices: list[str] = _list(
        "synthetic corpus: eSpeak voices = speakers (empty = default 8)", []
    )
    # --- transcripts (the linguistic teacher's input; speech recognition at training only) --
    transcribe: str = _help(
        "missing (Whisper transcribes the utterances without text) | all (Whisper transcribes "
        "every utterance; given texts are not used) | never (an utterance without text is an "
        "error). Only when a student distils the linguistic teacher",
        "missing",
    )
    asr_model: str = _help(
        "Whisper for transcripts: an offline bundle (whisper-tiny.en, whisper-base), a hub "
        "name, a CTranslate2 folder or a transformers checkpoint folder",
        "whisper-tiny.en",
    )
    asr_engine: str = _help(
        "auto (CTranslate2 when installed) | ctranslate2 | transformers", "auto"
    )
    asr_compute_type: str = _help(
        "CTranslate2 compute type: auto (float16 on a GPU, int8 on a CPU) | float32 | int8 | "
        "float16 | int8_float32",
        "auto",
    )
    asr_language: str = _help(
        "language of the speech for multilingual Whisper models ('auto' = detect per clip)", "en"
    )
    asr_batch_size: int = _help("clips per Whisper batch", 8)
    asr_cache: str = _help("transcript cache dir, shared across runs (empty = RUN/cache/asr)", "")
    run_dir: str = _help("run directory (resumable)", "runs/demo")
    prosody_cache: str = _help("LLD cache dir, shared across runs (empty = RUN/cache/prosody)", "")
    # --- reproducibility / hardware ---------------------------------------------------------
    seed: int = _help("seed of teachers and of the main student", 0)
    seeds: list[int] = _list("student seeds for --ablation", [0, 1, 2])
    threads: int = _help("torch CPU threads (0 = torch default)", 0)
    cpu: bool = _help("force CPU even if a GPU is available", False)
    mixed_precision: str = _help("auto (bf16 on a GPU that supports it) | no | bf16 | fp16", "auto")
    num_workers: int = _help("DataLoader workers for the student", 0)
    cache_audio: bool = _help("keep decoded training audio in memory", True)
    # --- linguistic teacher -----------------------------------------------------------------
    ling_model: str = _help(
        "text encoder: hub name or local path ('minilm' = offline MiniLM)", "minilm"
    )
    ling_epochs: int = _help("linguistic teacher epochs", 3)
    ling_lr: float = _help("linguistic teacher learning rate", 5e-5)
    ling_batch_size: int = _help("linguistic teacher batch size", 32)
    ling_max_tokens: int = _help("transcript truncation (tokens)", 64)
    ling_dropout: float = _help("dropout before the linguistic classifier", 0.1)
    # --- prosodic teacher -------------------------------------------------------------------
    pros_norm: str = _help("prosodic feature normalisation: speaker | global | none", "speaker")
    pros_hidden: int = _help("prosodic BiGRU hidden size per direction", 64)
    pros_layers: int = _help("prosodic BiGRU layers", 2)
    pros_dropout: float = _help("prosodic teacher dropout", 0.2)
    pros_epochs: int = _help("prosodic teacher epochs", 20)
    pros_lr: float = _help("prosodic teacher learning rate", 1e-3)
    pros_batch_size: int = _help("prosodic teacher batch size", 32)
    pros_max_frames: int = _help("random training crop of LLD frames (100 fps); 0 = whole", 0)
    # --- teacher targets --------------------------------------------------------------------
    teacher_targets: str = _help(
        "crossfit (each training utterance's target from a teacher that never trained on its "
        "speaker) | insample (the fold's teacher on its own training data: near one-hot)",
        "crossfit",
    )
    crossfit_folds: int = _help("speaker groups for crossfit targets (capped at the speakers)", 3)
    teacher_max_steps: int = _help("teacher batches per epoch at most (0 = all; rehearsals)", 0)
    # --- student ----------------------------------------------------------------------------
    student_model: str = _help(
        "audio encoder: named config (tiny, tiny-mel, ...), offline Whisper bundle "
        "(whisper-tiny.en, whisper-base), hub name or local path",
        "tiny",
    )
    epochs: int = _help("student epochs", 10)
    batch_size: int = _help("student batch size per process", 16)
    grad_accum: int = _help("gradient accumulation steps", 1)
    lr_encoder: float = _help("student encoder learning rate", 5e-4)
    lr_heads: float = _help("student classifier + projection heads learning rate", 1e-3)
    weight_decay: float = _help("AdamW weight decay", 0.01)
    warmup_ratio: float = _help("share of optimisation steps with linear warmup", 0.1)
    grad_clip: float = _help("max gradient norm (0 = off)", 1.0)
    freeze_feature_encoder: bool = _help("freeze the front end (CNN / Whisper convolutions)", False)
    freeze_layers: int = _help("freeze the front end and the lowest N transformer layers", 0)
    weighted_layers: str = _help(
        "pool a learned weighted sum of all layers: auto (pretrained students) | on | off", "auto"
    )
    max_seconds: float = _help("random training crop length in seconds", 3.0)
    speed_perturb: float = _help("training speed perturbation: factor in [1-x, 1+x] (0 = off)", 0.0)
    eval_batch_size: int = _help("evaluation batch size (whole clips)", 16)
    bucket_size: int = _help("batches per length bucket (length-bucketed batching)", 8)
    max_steps: int = _help("batches per epoch and process at most (0 = all; rehearsals)", 0)
    eval_max_utterances: int = _help(
        "validation and test utterances per fold that students score, at most, spread evenly over "
        "their lengths (0 = all; rehearsals: teachers and targets still use every utterance)",
        0,
    )
    refit: bool = _help(
        "after choosing the epoch on the validation speakers, retrain the student on all "
        "non-test speakers for that many epochs and test it (student/refit/)",
        False,
    )
    # --- distillation loss ------------------------------------------------------------------
    temperature: float = _help("KD temperature T", 2.0)
    a_ling: float = _help("weight of KD(linguistic teacher)", 1.0)
    a_pros: float = _help("weight of KD(prosodic teacher)", 1.0)
    b_ling: float = _help("weight of EMB(linguistic teacher)", 1.0)
    b_pros: float = _help("weight of EMB(prosodic teacher)", 1.0)
    emb_loss: str = _help("embedding distance: cosine | mse", "cosine")
    teacher_weighting: str = _help(
        "per-utterance teacher weights: fixed (the paper) | confidence (by p_teacher(true label))",
        "fixed",
    )
    scripted_corpora: list[str] = _list(
        "corpora whose texts are fixed sentences spoken in every emotion (e.g. ravdess,tess): "
        "the student does not learn from the linguistic teacher on their utterances",
        [],
    )
    dim_weight: float = _help(
        "weight of the CCC loss on rated arousal/valence/dominance (0 = off: the student has "
        "no dimensions head and the exported model no dimensions output)",
        0.0,
    )
    c_ling: float = _help(
        "weight of DIM(linguistic teacher): MSE to its predicted dimensions (needs dim_weight)", 0.0
    )
    c_pros: float = _help(
        "weight of DIM(prosodic teacher): MSE to its predicted dimensions (needs dim_weight)", 0.0
    )
    # --- what to run ------------------------------------------------------------------------
    variant: str = _help(
        "student variant of the main run (see training.fit.losses.VARIANTS)", "full"
    )
    ablation: bool = _help("train every variant in `variants` x seeds and write one table", False)
    variants: list[str] = _list(
        "student variants trained by --ablation (see training.fit.losses.VARIANTS)", list(VARIANTS)
    )
    export: str = _help("export the best student of the first fold to this model dir", "")
    int8: str = _help(
        "with --export, also write the int8 model (gated by the limits below): auto (for "
        "Whisper students), true (any student) or false",
        "auto",
    )
    int8_max_ua_drop: float = _help(
        "int8 is shipped only if its UA on held-out validation clips is at most this far "
        "below fp32's",
        0.02,
    )
    int8_max_dimensions_diff: float = _help(
        "... and, for a student with dimensions, only if it moves none by more than this "
        "(1-5 scale) on those clips, or lowers no dimension's CCC there by more than "
        "int8_max_ccc_drop",
        0.05,
    )
    int8_max_ccc_drop: float = _help("see int8_max_dimensions_diff", 0.01)
    # --- transfer set and vocabulary probe (training.data.transfer, training.stages.transfer) --
    transfer_n: int = _help(
        "unlabelled transfer utterances (wide-lexicon sentences, random voices and prosody): "
        "the student learns them from the teachers' KD and embedding terms only (0 = off)",
        0,
    )
    transfer_mix: float = _help(
        "transfer utterances drawn per labelled utterance each epoch (capped at transfer_n)", 1.0
    )
    transfer_temperature: float = _help(
        "KD temperature on transfer utterances (0 = the temperature of the labelled ones)", 0.0
    )
    transfer_seed: int = _help("transfer set generator seed", 1)
    transfer_path: str = _help("transfer set folder (empty = data/transfer-N-sSEED)", "")
    transfer_manifest: str = _help(
        "real speech with known words joining the transfer set: a CSV/JSONL manifest of "
        "path,text[,speaker,id] (no labels; empty = none)",
        "",
    )
    probe_n: int = _help(
        "vocabulary probe: words-only utterances per lexicon part (seen, transfer, novel), by "
        "held-out voices; each student and the linguistic teacher are scored on them (0 = off)",
        0,
    )
    probe_path: str = _help("vocabulary probe folder (empty = data/probe-N)", "")
    # --- augmentation (the student's training clips only; teachers' targets stay clean) -----
    aug_gain_db: float = _help("random gain in [-x, +x] dB (0 = off)", 0.0)
    aug_gain_p: float = _help("P(gain) per training clip, with aug_gain_db > 0", 1.0)
    aug_noise_p: float = _help(
        "P(coloured noise, white to brown or violet, at an SNR in aug_snr_db) per clip (0 = off)",
        0.0,
    )
    aug_babble_p: float = _help(
        "P(babble: 3-6 other training utterances at an SNR in aug_snr_db) per clip (0 = off)", 0.0
    )
    aug_snr_db: list[float] = _list("SNR range in dB of noise and babble: min,max", [5.0, 30.0])
    aug_reverb_p: float = _help(
        "P(reverberation by one of aug_reverb_rooms simulated rooms) per clip (0 = off)", 0.0
    )
    aug_reverb_rooms: int = _help(
        "room impulse responses simulated once per run (pyroomacoustics, seeded by seed)", 64
    )
    aug_telephone_p: float = _help(
        "P(telephone band: 8 kHz sampling, low cut at 200-400 Hz) per clip (0 = off)", 0.0
    )
    aug_codec_p: float = _help(
        "P(codec round trip at a random compression level) per clip (0 = off)", 0.0
    )
    aug_codecs: list[str] = _list("codecs of the round trip: mp3 | opus", ["mp3", "opus"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASET_KINDS,
    "protocol": PROTOCOLS,
    "teacher_targets": ("crossfit", "insample"),
    "transcribe": ("missing", "all", "never"),
    "asr_engine": ASR_ENGINES,
    "asr_compute_type": ASR_COMPUTE_TYPES,
    "pros_norm": ("speaker", "global", "none"),
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "emb_loss": ("cosine", "mse"),
    "teacher_weighting": TEACHER_WEIGHTINGS,
    "weighted_layers": ("auto", "on", "off"),
    "int8": ("auto", "true", "false"),
    "variant": tuple(VARIANTS),
    "variants": tuple(VARIANTS),  # each item
}


def field_types() -> dict[str, object]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _convert(key: str, value, kind) -> object:
    """Coerce ``value`` (a CLI string or a JSON/TOML value) to the field type, or raise."""
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (item,) = set(typing.get_args(kind)) - {Ellipsis}
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {value!r}")
        return [_convert(key, v, item) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {kind}")  # pragma: no cover


def _check_key(key: str, types_: dict) -> None:
    if key not in types_:
        close = difflib.get_close_matches(key, types_, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; see --help-config for all keys")


def apply(config: Config, values: dict) -> Config:
    """A copy of ``config`` with ``values`` type-checked and applied."""
    types_ = field_types()
    converted = {}
    for key, value in values.items():
        _check_key(key, types_)
        if isinstance(value, bool) and _takes_a_flag(key, types_):  # int8 = true in a file
            value = str(value).lower()
        converted[key] = _convert(key, value, types_[key])
        if key in CHOICES:
            given = converted[key] if isinstance(converted[key], list) else [converted[key]]
            bad = [v for v in given if v not in CHOICES[key]]
            if bad or not given:
                raise ConfigError(
                    f"{key}: expected {'names' if isinstance(converted[key], list) else 'one'} "
                    f"of {', '.join(CHOICES[key])}, got {value!r}"
                )
    return dataclasses.replace(config, **converted)


def read_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of keys")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def _takes_a_flag(key: str, types_: dict) -> bool:
    """A boolean, or a choice that includes true (``--int8`` alone means ``--int8=true``)."""
    return types_[key] is bool or "true" in CHOICES.get(key, ())


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``--key=value`` / ``--key value`` / ``--flag`` (booleans) -> {key: raw string}."""
    types_ = field_types()
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; use --key=value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        _check_key(key, types_)
        if not eq:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if _takes_a_flag(key, types_) and (nxt is None or nxt.startswith("--")):
                value = "true"
            elif nxt is None:
                raise ConfigError(f"--{key} needs a value")
            else:
                value, i = nxt, i + 1
        values[key] = value
        i += 1
    return values


def preset_values(preset: str, seen: tuple[str, ...] = ()) -> dict:
    """A preset's keys over those of the preset it ``extends`` (if any)."""
    if preset not in preset_names():
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
    if preset in seen:
        raise ConfigError(f"presets extend each other in a loop: {' -> '.join((*seen, preset))}")
    values = read_file(PRESETS_DIR / f"{preset}.toml")
    base = values.pop("extends", None)
    return {**preset_values(base, (*seen, preset)), **values} if base else values


def load_config(
    preset: str = "demo", config_file: str | None = None, overrides: list[str] | None = None
) -> Config:
    config = apply(Config(), preset_values(preset))
    if config_file:
        config = apply(config, read_file(config_file))
    return apply(config, parse_overrides(overrides or []))


def describe() -> str:
    """Every key with its type, default and help (for ``--help-config``)."""
    types_ = field_types()
    lines = []
    for f in dataclasses.fields(Config):
        kind = types_[f.name]
        name = getattr(kind, "__name__", str(kind)) if not typing.get_origin(kind) else str(kind)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{f.name}={default!r:<24} {name:<10} {f.metadata.get('help', '')}")
    return "\n".join(lines)
