"""``python -m training.distill``: the whole EmoDistill recipe, stage by stage, resumable.

    data -> prosody -> teachers (linguistic, prosodic) -> targets -> student(s) -> report -> export

Every stage writes into the run directory and is skipped when its output exists, so a killed
run resumes (the student from its last finished epoch). Under ``torchrun`` the cheap stages
(data, prosody, teachers, targets) run on rank 0 while the others wait; the student trains on
all processes (DDP via ``accelerate``) and only rank 0 writes.

    python -m training.distill --preset demo
    python -m training.distill --preset demo --ablation --seeds=0,1,2 --run_dir=runs/ablation
    python -m training.distill --preset iemocap --data_path=/data/IEMOCAP_full_release --folds=all
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from training.config import Config, ConfigError, describe, load_config, preset_names
from training.data.manifest import ManifestError
from training.data.splits import Fold, make_folds
from training.data.utterance import (
    Utterance,
    dimension_array,
    read_jsonl,
    write_jsonl,
)
from training.eval.calibration import calibration_report, plot_reliability
from training.eval.reports import (
    aggregate,
    brief,
    calibration_table,
    ccc_scores,
    confusion_png,
    plot_curves,
    plot_layer_weights,
    refit_table,
    results_table,
    scorer,
    speakers_table,
    subset_table,
)
from training.fit.batches import AudioSet
from training.fit.checkpoints import TRAINER_STATE
from training.fit.loop import (
    StudentOptions,
    predict_outputs,
    release_host_memory,
    train_student,
)
from training.fit.losses import TEACHERS, LossWeights
from training.fit.targets import load_targets
from training.fit.teachers import FitOptions
from training.models.student import is_pretrained, load_student

log = logging.getLogger("emodistill.training")
PARTS = ("train", "valid", "test")
# Test subsets reported when the corpus records what carries each label (the synthetic one).
SUBSETS = ("words_only", "prosody_only")
DONE = "result.json"


# --- process, logging ------------------------------------------------------------------------


class _TqdmHandler(logging.StreamHandler):
    """Log lines that do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(run_dir: Path, main_process: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if main_process else logging.WARNING)
    console = _TqdmHandler()
    console.setFormatter(fmt)
    log.addHandler(console)
    if main_process:
        handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        handler.setFormatter(fmt)
        log.addHandler(handler)
    import transformers

    # Their per-checkpoint "Loading weights" / "Writing model shards" bars drown ours.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def make_accelerator(cfg: Config) -> Accelerator:
    precision = cfg.mixed_precision
    if precision == "auto":
        gpu = torch.cuda.is_available() and not cfg.cpu
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # accelerate only sets up multi-process CPU training (gloo) when told it runs on CPU.
    cpu = cfg.cpu or not torch.cuda.is_available()
    return Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=[ddp_kwargs()])


def ddp_kwargs() -> DistributedDataParallelKwargs:
    """DDP must tolerate parameters without a gradient in a step: HuBERT / wav2vec 2.0 / WavLM
    configs drop whole layers at random during training (``layerdrop``, 0.1 in the hub's
    checkpoints) and only use ``masked_spec_embed`` when a step masks frames; without this a
    multi-process run stops within a few steps ("Expected to have finished reduction in the
    prior iteration"). The cost is one graph traversal per step."""
    return DistributedDataParallelKwargs(find_unused_parameters=True)


# --- stage 1: data ---------------------------------------------------------------------------


def ensure_synthetic_corpus(cfg: Config) -> None:
    from training.data.synthetic import (
        MANIFEST_NAME,
        SUMMARY_NAME,
        SyntheticConfig,
        add_dimensions,
        generate,
        has_dimensions,
    )

    root = Path(cfg.data_path)
    voices = {"voices": tuple(cfg.synth_voices)} if cfg.synth_voices else {}
    synth = SyntheticConfig(
        n=cfg.synth_n,
        seed=cfg.synth_seed,
        p_words=cfg.synth_p_words,
        p_prosody=cfg.synth_p_prosody,
        **voices,
    )
    if (root / MANIFEST_NAME).is_file():
        summary = json.loads((root / SUMMARY_NAME).read_text(encoding="utf-8"))
        wanted = {"n": cfg.synth_n, "seed": cfg.synth_seed, "voices": list(synth.voices)}
        found = {"n": summary["n"], "seed": summary["seed"], "voices": summary["config"]["voices"]}
        if wanted != found:
            raise ConfigError(
                f"{root} holds a synthetic corpus with {found}, the config asks for {wanted}; "
                "choose another data_path or delete the folder"
            )
        if not has_dimensions(root):  # a corpus from before dimensional affect: no new audio
            made = summary["config"]
            add_dimensions(
                dataclasses.replace(synth, p_words=made["p_words"], p_prosody=made["p_prosody"]),
                root,
            )
            log.info("added arousal, valence and dominance to %s", root / MANIFEST_NAME)
        return
    log.info("generating the synthetic corpus (%d utterances) in %s", cfg.synth_n, root)
    generate(synth, root)


def load_utterances(cfg: Config, main_first) -> list[Utterance]:
    """The dataset's utterances with labels in ``cfg.labels`` (a synthetic corpus is generated
    first, by rank 0, while the others wait: ``main_first`` is a ``training.runs.MainFirst``)."""
    from training.data import load_dataset

    if cfg.dataset == "synthetic":
        main_first.run("corpus", lambda: ensure_synthetic_corpus(cfg))
    utts = load_dataset(cfg.dataset, cfg.data_path, tuple(cfg.labels))
    kept = [u for u in utts if u.label in cfg.labels]
    if len(kept) < len(utts):
        log.info("dropped %d utterances with labels outside %s", len(utts) - len(kept), cfg.labels)
    if not kept:
        raise ConfigError(f"no utterances with labels {cfg.labels} in {cfg.data_path}")
    return kept


def select_folds(cfg: Config, folds: list[Fold]) -> list[Fold]:
    if cfg.folds == "first":
        return folds[:1]
    if cfg.folds == "all":
        return folds
    names = [n.strip() for n in cfg.folds.split(",")]
    by_name = {f.name: f for f in folds}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown folds {unknown}; this protocol has {sorted(by_name)}")
    return [by_name[n] for n in names]


def write_fold(fold: Fold, fold_dir: Path) -> None:
    """Write the fold's parts once; later runs read them back, so a resumed run keeps its split."""
    if not all((fold_dir / f"{p}.jsonl").is_file() for p in PARTS):
        fold_dir.mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            write_jsonl(getattr(fold, part), fold_dir / f"{part}.jsonl")


def read_fold(fold_dir: Path) -> dict[str, list[Utterance]]:
    return {p: read_jsonl(fold_dir / f"{p}.jsonl") for p in PARTS}


# --- stages 2-4: prosody, teachers, targets (rank 0 only) -------------------------------------


def prosodic_features(
    cfg: Config, parts: dict[str, list[Utterance]], cache_dir: Path, norm_path: Path | None = None
) -> dict[str, np.ndarray]:
    """Normalised LLDs by utterance id. Per-speaker statistics use each speaker's own unlabelled
    audio (test speakers included: no labels are involved); global ones are fitted on train
    only. The normaliser's statistics are saved to ``norm_path`` (beside the prosodic teacher:
    it cannot be used on new audio without them)."""
    from training.features.prosody import GlobalNormalizer, ProsodyCache, SpeakerNormalizer

    utts = [u for p in PARTS for u in parts[p]]
    raw = ProsodyCache(cache_dir).compute_all(utts)
    if cfg.pros_norm == "speaker":
        norm = SpeakerNormalizer().fit(raw, {u.id: u.speaker for u in utts})
    elif cfg.pros_norm == "global":
        norm = GlobalNormalizer().fit({u.id: raw[u.id] for u in parts["train"]})
    else:
        return {u.id: raw[u.id] for u in utts}
    if norm_path is not None:
        norm_path.parent.mkdir(parents=True, exist_ok=True)
        norm.save(norm_path)
    return {u.id: norm.transform(raw[u.id], u.speaker) for u in utts}


def loss_weights(cfg: Config) -> LossWeights:
    return LossWeights(
        cfg.a_ling,
        cfg.a_pros,
        cfg.b_ling,
        cfg.b_pros,
        cfg.temperature,
        cfg.emb_loss,
        cfg.teacher_weighting,
        c_ling=cfg.c_ling,
        c_pros=cfg.c_pros,
        dim=cfg.dim_weight,
    )


def teachers_needed(plan: Sequence[tuple[str, int]], weights: LossWeights) -> list[str]:
    used = set()
    for variant, _ in plan:
        w = weights.for_variant(variant)
        used |= {t for t in TEACHERS if w.uses(t)}
    return [t for t in TEACHERS if t in used]


def teacher_dimensions_needed(
    plan: Sequence[tuple[str, int]], weights: LossWeights, train: Sequence[Utterance]
) -> bool:
    """Whether the cached targets must carry the teachers' dimensions: some variant distils
    them and some training utterance is rated (the teachers' read-out is fitted on those)."""
    wanted = any(weights.for_variant(v).dimension_teachers for v, _ in plan)
    return wanted and any(u.dimensions is not None for u in train)


def weights_for(cfg: Config, variant: str, train: AudioSet) -> LossWeights:
    """The variant's weights; the dimensions (head and terms) only when training is rated."""
    weights = loss_weights(cfg).for_variant(variant)
    if weights.dimensions and not train.rated.any():
        log.warning(
            "dim_weight=%g but no training utterance has arousal/valence/dominance ratings: "
            "the student is trained without the dimensions head", weights.dim,
        )  # fmt: skip
        return weights.without_dimensions()
    return weights


def teacher_options(cfg: Config, teacher: str, device: str) -> FitOptions:
    return FitOptions(
        epochs=getattr(cfg, f"{teacher}_epochs"),
        lr=getattr(cfg, f"{teacher}_lr"),
        batch_size=getattr(cfg, f"{teacher}_batch_size"),
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        grad_clip=cfg.grad_clip,
        seed=cfg.seed,
        device=device,
        desc=f"{teacher} teacher",
        max_steps=cfg.teacher_max_steps,
    )


NORMALIZER_FILE = "normalizer.json"


def teacher_done(fold_dir: Path, teacher: str, dimensions: bool = False) -> bool:
    """Targets cached (with the teacher's dimensions when they are needed)."""
    from training.fit.targets import has_dimensions, target_path

    path = target_path(fold_dir / "targets", teacher)
    return path.is_file() and (not dimensions or has_dimensions(path))


def fit_teacher(
    cfg: Config,
    teacher: str,
    parts: dict[str, list[Utterance]],
    feats: dict[str, np.ndarray] | None,
    tdir: Path,
    device: str,
    desc: str,
) -> dict:
    """Train one teacher on parts["train"] (selection on parts["valid"]; the last epoch when it
    is empty), score it, save it in ``tdir``; skipped when ``tdir/metrics.json`` exists."""
    from training.fit.teachers import train_linguistic, train_prosodic

    metrics_file = tdir / "metrics.json"
    if metrics_file.is_file():
        log.info("%s: done, skipped (%s)", desc, metrics_file)
        return json.loads(metrics_file.read_text(encoding="utf-8"))
    y = {p: np.array([cfg.labels.index(u.label) for u in parts[p]], dtype=int) for p in PARTS}
    started = time.monotonic()
    opts = teacher_options(cfg, teacher, device)
    opts.desc = desc
    if teacher == "ling":
        metrics = train_linguistic(
            parts, y, cfg.labels, model=cfg.ling_model, dropout=cfg.ling_dropout,
            max_tokens=cfg.ling_max_tokens, opts=opts, out_dir=tdir,
        )  # fmt: skip
    else:
        part_feats = {p: [feats[u.id] for u in parts[p]] for p in PARTS}
        metrics = train_prosodic(
            part_feats, y, cfg.labels, hidden=cfg.pros_hidden, layers=cfg.pros_layers,
            dropout=cfg.pros_dropout, max_frames=cfg.pros_max_frames, opts=opts, out_dir=tdir,
        )  # fmt: skip
    metrics["seconds"] = round(time.monotonic() - started, 1)
    metrics["speakers"] = {p: sorted({u.speaker for u in parts[p]}) for p in PARTS}
    metrics_file.write_text(json.dumps(metrics, indent=1), encoding="utf-8")

    def ua(part: str) -> str:
        return f"{metrics[part]['ua']:.3f}" if metrics.get(part) else "-"

    log.info(
        "%s: best epoch %d, training accuracy %.3f, valid UA %s, test UA %s (%.0fs)",
        desc, metrics["best_epoch"], metrics["train_accuracy"], ua("valid"), ua("test"),
        metrics["seconds"],
    )  # fmt: skip
    return metrics


def teacher_outputs(
    cfg: Config,
    teacher: str,
    tdir: Path,
    utts: list[Utterance],
    feats: dict[str, np.ndarray] | None,
    device: str,
) -> tuple[np.ndarray, np.ndarray]:
    from training.fit.targets import linguistic_outputs, prosodic_outputs

    bs = getattr(cfg, f"{teacher}_batch_size")
    if teacher == "ling":
        return linguistic_outputs(tdir, utts, cfg.ling_max_tokens, bs, device)
    return prosodic_outputs(tdir, [feats[u.id] for u in utts], bs, device)


def teacher_probe(
    cfg: Config,
    teacher: str,
    tdir: Path,
    train: list[Utterance],
    feats: dict[str, np.ndarray] | None,
    device: str,
    embedding: np.ndarray | None = None,
):
    """The teacher's dimension read-out (training.fit.targets.DimensionProbe), fitted on its own
    training utterances (``embedding``: the teacher's on ``train``, when already computed)
    and saved beside it; loaded when saved."""
    from training.fit.targets import PROBE_FILE, DimensionProbe

    path = tdir / PROBE_FILE
    if path.is_file():
        return DimensionProbe.load(path)
    if embedding is None:
        _, embedding = teacher_outputs(cfg, teacher, tdir, train, feats, device)
    probe = DimensionProbe.fit(embedding, dimension_array(train))
    probe.save(path)
    return probe


def teacher_rows(
    utts: list[Utterance], logits: np.ndarray, emb: np.ndarray, probe=None
) -> dict[str, tuple]:
    """{id: (logits, embedding, dimensions or None)}: one teacher's targets of ``utts``."""
    dims = probe.predict(emb) if probe is not None else [None] * len(utts)
    return {u.id: (logits[i], emb[i], dims[i]) for i, u in enumerate(utts)}


def teacher_stages(
    cfg: Config,
    fold_dir: Path,
    parts: dict[str, list[Utterance]],
    teachers: list[str],
    device: str,
    dimensions: bool = False,
) -> None:
    """Train each needed teacher and cache its targets for the training and validation
    utterances (validation targets serve a refit on all non-test speakers), unless done.

    ``teacher_targets=crossfit``: the training speakers are split into ``crossfit_folds``
    groups (training.fit.crossfit); a teacher trained on the other groups (selected on the
    validation speakers) gives each group's targets. ``insample``: the fold's teacher gives
    them all. Either way the fold's teacher (all training speakers) is what the report scores,
    and it gives the validation speakers' targets (it never trained on them).
    ``dimensions``: the targets also carry each teacher's predicted dimensions (the read-out
    of the teacher that gave the utterance's logits; ``teacher_probe``).
    """
    from training.fit.crossfit import speaker_groups, target_stats
    from training.fit.targets import target_path, write_targets

    pending = [t for t in teachers if not teacher_done(fold_dir, t, dimensions)]
    for teacher in teachers:
        if teacher not in pending:
            log.info("%s teacher and targets: done, skipped", teacher)
    if not pending:  # a resumed run: no prosody to hash or load
        return
    feats = None
    if "pros" in pending:
        cache = (
            Path(cfg.prosody_cache)
            if cfg.prosody_cache
            else Path(cfg.run_dir) / "cache" / "prosody"
        )
        norm_path = fold_dir / "teachers" / "pros" / NORMALIZER_FILE
        feats = prosodic_features(cfg, parts, cache, norm_path)
    labels = {u.id: cfg.labels.index(u.label) for p in PARTS for u in parts[p]}
    for teacher in pending:
        tdir = fold_dir / "teachers" / teacher
        fit_teacher(cfg, teacher, parts, feats, tdir, device, f"{teacher} teacher")
        rows: dict[str, tuple[np.ndarray, ...]] = {}

        sources = []
        if cfg.teacher_targets == "crossfit":
            for g, held in enumerate(speaker_groups(parts["train"], cfg.crossfit_folds)):
                inner = {
                    "train": [u for u in parts["train"] if u.speaker not in held],
                    "valid": parts["valid"],
                    "test": [],
                }
                sub_dir = tdir / "crossfit" / str(g)
                desc = f"{teacher} teacher, cross-fit {g} (without {'+'.join(held)})"
                sub = fit_teacher(cfg, teacher, inner, feats, sub_dir, device, desc)
                out_of_fold = [u for u in parts["train"] if u.speaker in held]
                logits, emb = teacher_outputs(cfg, teacher, sub_dir, out_of_fold, feats, device)
                probe = (
                    teacher_probe(cfg, teacher, sub_dir, inner["train"], feats, device)
                    if dimensions
                    else None
                )
                rows.update(teacher_rows(out_of_fold, logits, emb, probe))
                sources.append(
                    {"dir": str(sub_dir.relative_to(fold_dir)), "predicts": held,
                     "train_accuracy": sub["train_accuracy"]}
                )  # fmt: skip
            rest = parts["valid"]
        else:
            rest = parts["train"] + parts["valid"]
        if rest:
            logits, emb = teacher_outputs(cfg, teacher, tdir, rest, feats, device)
            # in-sample: ``rest`` starts with the fold teacher's own training utterances
            own = emb[: len(parts["train"])] if cfg.teacher_targets == "insample" else None
            probe = (
                teacher_probe(cfg, teacher, tdir, parts["train"], feats, device, own)
                if dimensions
                else None
            )
            rows.update(teacher_rows(rest, logits, emb, probe))
        ids = [u.id for u in parts["train"] + parts["valid"]]
        logits = np.stack([rows[i][0] for i in ids])
        emb = np.stack([rows[i][1] for i in ids])
        dims = np.stack([rows[i][2] for i in ids]) if dimensions else None
        n_train = len(parts["train"])
        y = np.array([labels[i] for i in ids])
        stats = {
            "mode": cfg.teacher_targets,
            "train": target_stats(logits[:n_train], y[:n_train], cfg.temperature),
            "valid": target_stats(logits[n_train:], y[n_train:], cfg.temperature),
            "crossfit": sources,
        }
        out = target_path(fold_dir / "targets", teacher)
        out.parent.mkdir(parents=True, exist_ok=True)
        if dims is not None:  # how well the read-out matches the ratings (CCC per dimension)
            rated = dimension_array(parts["train"] + parts["valid"])
            stats["dimensions_ccc"] = {
                "train": ccc_scores(dims[:n_train], rated[:n_train]),
                "valid": ccc_scores(dims[n_train:], rated[n_train:]),
            }
            log.info("%s dimensions (CCC): %s", teacher, stats["dimensions_ccc"])
        out.with_suffix(".json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
        write_targets(out, ids, logits, emb, dims)
        t = stats["train"]
        log.info(
            "%s targets (%s) on %d training utterances: accuracy %.3f, mean entropy %.3f nats "
            "(%.3f at T=%g; uniform %.3f), mean top probability %.3f",
            teacher, cfg.teacher_targets, t["n"], t["accuracy"], t["mean_entropy"],
            t[f"mean_entropy_T{cfg.temperature:g}"], cfg.temperature, t["max_entropy"],
            t["mean_top_probability"],
        )  # fmt: skip


def read_teacher_metrics(fold_dir: Path) -> dict:
    out = {}
    for teacher in TEACHERS:
        path = fold_dir / "teachers" / teacher / "metrics.json"
        if path.is_file():
            out[teacher] = json.loads(path.read_text(encoding="utf-8"))
    return out


# --- stage 5: students -------------------------------------------------------------------------


def student_plan(cfg: Config) -> list[tuple[str, int]]:
    if cfg.ablation:
        return [(v, s) for v in cfg.variants for s in cfg.seeds]
    return [(cfg.variant, cfg.seed)]


def student_dir(cfg: Config, fold_dir: Path, variant: str, seed: int) -> Path:
    """The main student lives in ``student/`` (what export reads); ablation runs beside it."""
    if variant == cfg.variant and seed == cfg.seed:
        return fold_dir / "student"
    return fold_dir / "students" / f"{variant}-seed{seed}"


def weighted_layers(cfg: Config) -> bool:
    if cfg.weighted_layers == "auto":
        return is_pretrained(cfg.student_model)
    return cfg.weighted_layers == "on"


def student_options(cfg: Config, weights: LossWeights, seed: int, desc: str) -> StudentOptions:
    return StudentOptions(
        model=cfg.student_model, labels=tuple(cfg.labels), epochs=cfg.epochs,
        batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, grad_accum=cfg.grad_accum,
        lr_encoder=cfg.lr_encoder, lr_heads=cfg.lr_heads, weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio, grad_clip=cfg.grad_clip,
        freeze_feature_encoder=cfg.freeze_feature_encoder, freeze_layers=cfg.freeze_layers,
        weighted_layers=weighted_layers(cfg), max_seconds=cfg.max_seconds,
        speed_perturb=cfg.speed_perturb,
        bucket_size=cfg.bucket_size, num_workers=cfg.num_workers, seed=seed, weights=weights,
        max_steps=cfg.max_steps,
        desc=desc,
    )  # fmt: skip


def run_student(
    cfg: Config,
    fold: str,
    fold_dir: Path,
    variant: str,
    seed: int,
    data: dict[str, AudioSet],
    targets: dict[str, dict[str, np.ndarray]],
    accelerator: Accelerator,
    carriers: np.ndarray | None = None,
    speakers: dict[str, list[str]] | None = None,
) -> dict:
    """Train (or resume) one student and score its best and last checkpoints. ``carriers``:
    what carries each test utterance's label (synthetic corpora), for per-subset test UA.
    ``speakers``: who trained, validated and tested (recorded in the result and summary).
    Without validation speakers (the ``final`` protocol) only the last epoch exists."""
    sdir = student_dir(cfg, fold_dir, variant, seed)
    if (sdir / DONE).is_file():
        log.info("student %s seed %d: done, skipped (%s)", variant, seed, sdir)
        return json.loads((sdir / DONE).read_text(encoding="utf-8"))
    weights = weights_for(cfg, variant, data["train"])
    used = [t for t in TEACHERS if weights.uses(t)]
    data["train"].targets = {t: targets[t] for t in used}
    score = scorer(cfg.labels)
    started = time.monotonic()
    opts = student_options(cfg, weights, seed, f"student {variant} s{seed}")
    trained = train_student(data["train"], data["valid"], opts, sdir, accelerator, score)
    # no second pass over validation
    known = {"best": (trained.pop("best_valid_logits"), trained.pop("best_valid_dimensions"))}
    result = {
        "fold": fold,
        "variant": variant,
        "seed": seed,
        "weights": weights.__dict__,
        "speakers": speakers or {},
        **trained,
    }
    has_valid, has_test = len(data["valid"]) > 0, len(data["test"]) > 0
    for which in ("best", "last") if has_valid else ("last",):
        if which == "last" and trained["best_epoch"] == len(trained["history"]):
            # The best epoch was the last: the same weights, the same scores.
            result.update({f"{k[:-5]}_last": v for k, v in result.items() if k.endswith("_best")})
            break
        student = load_student(sdir / which).to(accelerator.device)
        scored = {}
        for part in [p for p in ("valid", "test") if len(data[p])]:
            if part == "valid" and known.get(which, (None,))[0] is not None:
                logits, dims = known[which]
            else:
                logits, _, dims = predict_outputs(
                    student, data[part], cfg.eval_batch_size, accelerator
                )
            scored[part] = logits
            result[f"{part}_{which}"] = score(data[part].y, logits)
            if dims is not None:
                result[f"{part}_{which}"]["ccc"] = ccc_scores(dims, data[part].dimensions)
            if part == "test" and carriers is not None:
                subsets = {n: carriers == n for n in SUBSETS if (carriers == n).any()}
                result[f"subsets_{which}"] = {
                    n: {**brief(score(data[part].y[m], logits[m])), "n": int(m.sum())}
                    for n, m in subsets.items()
                }
        if which == "best" and student.layer_weights is not None:
            result["layer_weights"] = student.layer_weights
        if which == "best" and has_test:
            # The temperature is fitted on the validation speakers; test only reports it.
            result["calibration"] = calibration_report(
                scored["valid"], data["valid"].y, scored["test"], data["test"].y
            )
            if accelerator.is_main_process:
                plot_reliability(
                    scored["test"], data["test"].y, result["calibration"]["temperature"],
                    sdir / "reliability.png", f"{variant} s{seed}: test speakers",
                )  # fmt: skip
        del student
    release_host_memory()
    result["seconds"] = round(time.monotonic() - started, 1)
    if has_test:
        log.info(
            "student %s seed %d: test UA %.3f (best valid, epoch %d) / %.3f (last epoch)",
            variant, seed, result["test_best"]["ua"], result["best_epoch"],
            result["test_last"]["ua"],
        )  # fmt: skip
    if accelerator.is_main_process:
        summary = {
            "dataset": cfg.dataset, "protocol": cfg.protocol, "fold": fold,
            "backbone": cfg.student_model, "epoch": result["best_epoch"], "labels": list(cfg.labels),
            "valid": brief(result["valid_best"]) if has_valid else None,
            "test": brief(result["test_best"]) if has_test else None,
            "seed": seed, "variant": variant, "calibration": result.get("calibration"),
            "speakers": result["speakers"],
        }  # fmt: skip
        checkpoint = sdir / ("best" if has_valid else "last")
        (checkpoint / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (sdir / DONE).write_text(json.dumps(result, indent=1), encoding="utf-8")
        drop_trainer_state(sdir)
    accelerator.wait_for_everyone()
    return result


def capped(utts: list[Utterance], limit: int) -> list[Utterance]:
    """At most ``limit`` utterances (0 = all), evenly spaced in length order so that short and
    long clips stay represented; the order is kept."""
    if limit <= 0 or len(utts) <= limit:
        return utts
    by_length = sorted(range(len(utts)), key=lambda i: (utts[i].duration, utts[i].id))
    keep = (
        {by_length[round(k * (len(utts) - 1) / (limit - 1))] for k in range(limit)}
        if limit > 1
        else {by_length[0]}
    )
    return [u for i, u in enumerate(utts) if i in keep]


def drop_trainer_state(sdir: Path) -> None:
    """A finished student needs no optimizer state (~760 MB for hubert-base): only a killed run
    resumes from it, and result.json now marks this one done. When the best epoch was the
    last, ``best/`` and ``last/`` hold the same weights: they become one file on disk."""
    (sdir / "last" / TRAINER_STATE).unlink(missing_ok=True)
    share_identical_files(sdir / "best", sdir / "last")


def share_identical_files(source: Path, target: Path) -> int:
    """Replace each file of ``target`` whose bytes equal the file of the same name in
    ``source`` by a hard link to it (~360 MB per hubert-base checkpoint). Checkpoints are
    always written as new files (``training.fit.checkpoints.checkpoint``), never changed in place, so a
    shared file is never rewritten through the other name. Returns the bytes saved; a file
    system without hard links saves nothing and changes nothing."""
    import filecmp
    import os

    if not (source.is_dir() and target.is_dir()):
        return 0
    saved = 0
    for theirs in target.iterdir():
        ours = source / theirs.name
        if not (ours.is_file() and theirs.is_file()) or ours.samefile(theirs):
            continue
        if not filecmp.cmp(ours, theirs, shallow=False):
            continue
        spare = theirs.with_name(theirs.name + ".link")
        try:
            spare.unlink(missing_ok=True)
            os.link(ours, spare)
        except OSError:
            continue
        spare.replace(theirs)  # atomic: a kill leaves either copy, never neither
        saved += ours.stat().st_size
    return saved


def run_refit(
    cfg: Config,
    fold_dir: Path,
    variant: str,
    seed: int,
    result: dict,
    parts: dict[str, list[Utterance]],
    data: dict[str, AudioSet],
    teachers: list[str],
    accelerator: Accelerator,
) -> dict:
    """Retrain the student on all non-test speakers (train + valid) for the epoch count the
    validation speakers chose, then test it: ``student/refit/`` beside ``student/best``."""
    sdir = student_dir(cfg, fold_dir, variant, seed) / "refit"
    if (sdir / DONE).is_file():
        log.info("refit %s seed %d: done, skipped (%s)", variant, seed, sdir)
        return json.loads((sdir / DONE).read_text(encoding="utf-8"))
    epochs = int(result["best_epoch"])
    pool = parts["train"] + parts["valid"]
    train = audio_set(cfg, pool)
    weights = weights_for(cfg, variant, train)
    used = [t for t in teachers if weights.uses(t)]
    train.targets = load_targets(fold_dir / "targets", used, [u.id for u in pool])
    empty = AudioSet([], np.zeros(0, dtype=int), cache=False, durations=[])
    opts = student_options(cfg, weights, seed, f"refit {variant} s{seed}")
    opts.epochs = epochs
    score = scorer(cfg.labels)
    trained = train_student(train, empty, opts, sdir, accelerator, score)
    trained.pop("best_valid_logits")
    trained.pop("best_valid_dimensions")
    student = load_student(sdir / "last").to(accelerator.device)
    logits, _, dims = predict_outputs(student, data["test"], cfg.eval_batch_size, accelerator)
    del student
    release_host_memory()
    speakers = {
        "train": sorted({u.speaker for u in pool}),
        "valid": [],
        "test": sorted({u.speaker for u in parts["test"]}),
    }
    refit = {
        "epochs": epochs,
        "epochs_chosen_on": sorted({u.speaker for u in parts["valid"]}),
        "train_utterances": len(pool),
        "speakers": speakers,
        "test": score(data["test"].y, logits),
        "history": trained["history"],
    }
    if dims is not None:
        refit["test"]["ccc"] = ccc_scores(dims, data["test"].dimensions)
    log.info(
        "refit %s seed %d: %d epochs on %d utterances (%s), test UA %.3f",
        variant, seed, epochs, len(pool), ",".join(speakers["train"]), refit["test"]["ua"],
    )  # fmt: skip
    if accelerator.is_main_process:
        summary = {
            "dataset": cfg.dataset, "protocol": cfg.protocol, "fold": result["fold"],
            "backbone": cfg.student_model, "epoch": epochs, "labels": list(cfg.labels),
            "valid": None, "test": brief(refit["test"]), "seed": seed, "variant": variant,
            "refit": True, "speakers": speakers,
            "calibration": result.get("calibration"),
        }  # fmt: skip
        (sdir / "last" / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (sdir / DONE).write_text(json.dumps(refit, indent=1), encoding="utf-8")
        drop_trainer_state(sdir)
    accelerator.wait_for_everyone()
    return refit


# --- the recipe -------------------------------------------------------------------------------


def run(cfg: Config) -> dict:
    """Run (or resume) everything ``cfg`` asks for; returns the metrics written to metrics.json."""
    from training.runs import MainFirst, stage

    accelerator = make_accelerator(cfg)
    main_process = accelerator.is_main_process
    rank = accelerator.process_index
    run_dir = Path(cfg.run_dir)
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    setup_logging(run_dir, main_process)
    saved = run_dir / "config.json"
    if main_process and saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = {k: (before.get(k), v) for k, v in cfg.to_dict().items() if before.get(k) != v}
        if changed:
            log.warning("resuming with a changed config (finished stages are kept): %s", changed)
    if main_process:
        cfg.save(saved)
    log.info(
        "EmoDistill run %s: %s on %s, %d process(es), mixed precision %s",
        run_dir, cfg.dataset, accelerator.device, accelerator.num_processes,
        accelerator.mixed_precision,
    )  # fmt: skip
    started = time.monotonic()
    main_first = MainFirst(accelerator, run_dir)
    with stage("data", run_dir, rank):
        utts = load_utterances(cfg, main_first)
        folds = select_folds(
            cfg, make_folds(utts, cfg.protocol, valid_speakers=cfg.valid_speakers, seed=cfg.seed)
        )
    plan = student_plan(cfg)
    base = loss_weights(cfg)
    teachers = teachers_needed(plan, base)
    students, teacher_metrics, histories = [], [], {}
    for fold in folds:
        fold_dir = run_dir / "folds" / fold.name
        main_first.run(f"fold-{fold.name}", lambda fold=fold, d=fold_dir: write_fold(fold, d))
        parts = read_fold(fold_dir)
        log.info(
            "fold %s: train %d utts (%s), valid %d (%s), test %d (%s)",
            fold.name, len(parts["train"]), speakers_of(parts["train"]),
            len(parts["valid"]), speakers_of(parts["valid"]),
            len(parts["test"]), speakers_of(parts["test"]),
        )  # fmt: skip
        dims_needed = teacher_dimensions_needed(plan, base, parts["train"])
        with stage("teachers", run_dir, rank, fold=fold.name) as record:
            # A resumed run's finished stages are recorded as skipped (not timed as work).
            record["skipped"] = all(teacher_done(fold_dir, t, dims_needed) for t in teachers)
            # Rank 0 alone; the others wait on a marker file, not in a barrier (training.runs).
            main_first.run(
                f"teachers-{fold.name}",
                lambda d=fold_dir, p=parts, n=dims_needed: teacher_stages(
                    cfg, d, p, teachers, str(accelerator.device), n
                ),
            )
        scored = {p: capped(parts[p], cfg.eval_max_utterances) for p in ("valid", "test")}
        if any(len(scored[p]) < len(parts[p]) for p in scored):
            log.info(
                "fold %s: students score %d of %d valid and %d of %d test utterances "
                "(eval_max_utterances=%d)", fold.name, len(scored["valid"]), len(parts["valid"]),
                len(scored["test"]), len(parts["test"]), cfg.eval_max_utterances,
            )  # fmt: skip
        data = {p: audio_set(cfg, us) for p, us in (parts | scored).items()}
        ids = [u.id for u in parts["train"]]
        targets = load_targets(fold_dir / "targets", teachers, ids)
        carriers = np.array([u.extra.get("carrier", "") for u in scored["test"]])
        for variant, seed in plan:
            sdir = student_dir(cfg, fold_dir, variant, seed)
            with stage("student", run_dir, rank, fold=fold.name, variant=variant, seed=seed) as r:
                r["skipped"] = (sdir / DONE).is_file()
                result = run_student(
                    cfg, fold.name, fold_dir, variant, seed, data, targets, accelerator,
                    carriers if carriers.any() else None, speakers_by_part(parts),
                )  # fmt: skip
            if cfg.refit and parts["valid"]:
                with stage("refit", run_dir, rank, fold=fold.name, variant=variant, seed=seed) as r:
                    r["skipped"] = (sdir / "refit" / DONE).is_file()
                    result["refit"] = run_refit(
                        cfg, fold_dir, variant, seed, result, parts, data, teachers, accelerator
                    )
            students.append(result)
            if fold is folds[0] and seed == plan[0][1]:
                histories[variant] = result["history"]
        teacher_metrics.append(read_teacher_metrics(fold_dir) if parts["test"] else {})
    metrics = {
        "config": cfg.to_dict(),
        "folds": [f.name for f in folds],
        "summary": aggregate([s for s in students if "test_best" in s], teacher_metrics),
        "teachers": teacher_metrics,
        "students": [{k: v for k, v in s.items() if k != "history"} for s in students],
        "seconds": round(time.monotonic() - started, 1),
    }
    if main_process:
        write_report(cfg, run_dir, folds, students, teacher_metrics, histories, metrics)
    if cfg.export:
        from export import export_run

        with stage("export", run_dir, rank):
            out = main_first.run(
                "export",
                lambda: export_run(
                    run_dir, cfg.export, fold=folds[0].name, int8=cfg.int8,
                    int8_max_ua_drop=cfg.int8_max_ua_drop,
                ),
            )  # fmt: skip
        log.info("exported the student of fold %s to %s", folds[0].name, out)
    main_first.close()
    return metrics


def audio_set(cfg: Config, utts: Sequence[Utterance]) -> AudioSet:
    """The utterances' audio, class indices and rated dimensions (NaN rows: unrated)."""
    return AudioSet(
        [u.audio_path for u in utts],
        np.array([cfg.labels.index(u.label) for u in utts], dtype=int),
        cache=cfg.cache_audio,
        durations=[u.duration for u in utts],
        dimensions=dimension_array(list(utts)),
    )


def speakers_of(utts: Sequence[Utterance]) -> str:
    speakers = sorted({u.speaker for u in utts})
    return f"{len(speakers)} speakers: {','.join(speakers)}" if speakers else "none"


def speakers_by_part(parts: dict[str, list[Utterance]]) -> dict[str, list[str]]:
    return {p: sorted({u.speaker for u in parts[p]}) for p in PARTS}


def write_report(
    cfg: Config,
    run_dir: Path,
    folds: list[Fold],
    students: list[dict],
    teachers: list[dict],
    histories: dict[str, list[dict]],
    metrics: dict,
) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    seeds = sorted({s["seed"] for s in students})
    title = (
        f"{cfg.dataset}, protocol {cfg.protocol}, folds {', '.join(f.name for f in folds)}, "
        f"seeds {', '.join(map(str, seeds))}, student {cfg.student_model}, {cfg.epochs} epochs"
    )
    speakers = speakers_table(students)
    scored = [s for s in students if "test_best" in s]
    if not scored:  # the final protocol: nothing held out, nothing to score
        text = (
            f"### {title}\n\nFinal model(s): trained on every speaker for {cfg.epochs} epochs, "
            f"no validation or test speakers.\n{speakers}"
        )
        (run_dir / "results.md").write_text(text, encoding="utf-8")
        plot_curves(histories, run_dir / "training_curves.png")
        log.info("results (%s):\n%s", run_dir / "results.md", text)
        return
    students = scored
    table = results_table(students, teachers, title) + subset_table(students)
    table += calibration_table(students) + refit_table(students) + speakers
    note = (
        "\nUA/WA in % on the held-out test speakers, mean ± std over (fold, seed) runs; teachers "
        "over folds. 'best valid' = the epoch with the best validation UA, 'last epoch' = the "
        f"final epoch. Total time {metrics['seconds'] / 60:.1f} min.\n"
    )
    (run_dir / "results.md").write_text(table + note, encoding="utf-8")
    for fold, fold_teachers in zip(folds, teachers, strict=True):
        for name, tm in fold_teachers.items():
            if not tm.get("test"):
                continue
            confusion_png(tm["test"], cfg.labels, run_dir / f"confusion_{fold.name}_{name}_teacher.png",
                          f"{name} teacher, fold {fold.name} (test)")  # fmt: skip
        main = [s for s in students if s["fold"] == fold.name and s["variant"] == cfg.variant]
        if main:
            confusion_png(main[0]["test_best"], cfg.labels, run_dir / f"confusion_{fold.name}_student.png",
                          f"student {cfg.variant}, fold {fold.name} (test)")  # fmt: skip
    plot_curves(histories, run_dir / "training_curves.png")
    weighted = [s for s in students if s.get("layer_weights")]
    if weighted:
        plot_layer_weights(weighted, run_dir / "layer_weights.png")
    log.info("results (%s):\n%s", run_dir / "results.md", table)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(__doc__)
        print(f"options: --preset NAME ({', '.join(preset_names())}), --config FILE (JSON/TOML),")
        print("and --key=value for any key:\n")
        print(describe())
        return 0
    if "--help-config" in args:
        print(describe())
        return 0
    preset, config_file, rest = "demo", None, []
    i = 0
    while i < len(args):
        key, eq, value = args[i].partition("=")
        if key in ("--preset", "--config"):
            if not eq:
                if i + 1 >= len(args):
                    print(f"error: {key} needs a value", file=sys.stderr)
                    return 2
                value, i = args[i + 1], i + 1
            preset, config_file = (value, config_file) if key == "--preset" else (preset, value)
        else:
            rest.append(args[i])
        i += 1
    try:
        cfg = load_config(preset, config_file, rest)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # The ~400k objects of the imports (torch, transformers) live as long as the process: out
    # of the collector's sight, each gc.collect between students and stages walks only what
    # the run itself made (0.2-0.4 s a call otherwise, ~100 calls in a 5-fold run).
    gc.freeze()
    try:
        run(cfg)
    except (ConfigError, ManifestError) as exc:  # the data, found before any training
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
