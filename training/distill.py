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

from training.calibration import calibration_report, plot_reliability
from training.config import Config, ConfigError, describe, load_config, preset_names
from training.data.splits import Fold, make_folds
from training.data.utterance import Utterance, read_jsonl, write_jsonl
from training.evaluate import (
    aggregate,
    brief,
    calibration_table,
    confusion_png,
    plot_curves,
    plot_layer_weights,
    results_table,
    scorer,
    subset_table,
)
from training.loop import AudioSet, StudentOptions, predict, train_student
from training.losses import TEACHERS, LossWeights
from training.student import is_pretrained, load_student
from training.targets import load_targets
from training.teachers.fit import FitOptions

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
    from training.data.synthetic import MANIFEST_NAME, SUMMARY_NAME, SyntheticConfig, generate

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
        return
    log.info("generating the synthetic corpus (%d utterances) in %s", cfg.synth_n, root)
    generate(synth, root)


def load_utterances(cfg: Config, accelerator: Accelerator) -> list[Utterance]:
    from training.data import load_dataset

    if cfg.dataset == "synthetic" and accelerator.is_main_process:
        ensure_synthetic_corpus(cfg)
    accelerator.wait_for_everyone()
    utts = load_dataset(cfg.dataset, cfg.data_path)
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
    cfg: Config, parts: dict[str, list[Utterance]], cache_dir: Path
) -> dict[str, list[np.ndarray]]:
    """Normalised LLDs per part. Per-speaker statistics use each speaker's own unlabelled audio
    (test speakers included: no labels are involved); global ones are fitted on train only."""
    from training.prosody import GlobalNormalizer, ProsodyCache, SpeakerNormalizer

    utts = [u for p in PARTS for u in parts[p]]
    raw = ProsodyCache(cache_dir).compute_all(utts)
    if cfg.pros_norm == "speaker":
        norm = SpeakerNormalizer().fit(raw, {u.id: u.speaker for u in utts})
    elif cfg.pros_norm == "global":
        norm = GlobalNormalizer().fit({u.id: raw[u.id] for u in parts["train"]})
    else:
        return {p: [raw[u.id] for u in parts[p]] for p in PARTS}
    return {p: [norm.transform(raw[u.id], u.speaker) for u in parts[p]] for p in PARTS}


def loss_weights(cfg: Config) -> LossWeights:
    return LossWeights(
        cfg.a_ling,
        cfg.a_pros,
        cfg.b_ling,
        cfg.b_pros,
        cfg.temperature,
        cfg.emb_loss,
        cfg.teacher_weighting,
    )


def teachers_needed(plan: Sequence[tuple[str, int]], weights: LossWeights) -> list[str]:
    used = set()
    for variant, _ in plan:
        w = weights.for_variant(variant)
        used |= {t for t in TEACHERS if w.kd(t) > 0 or w.emb(t) > 0}
    return [t for t in TEACHERS if t in used]


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
    )


def teacher_stages(
    cfg: Config, fold_dir: Path, parts: dict[str, list[Utterance]], teachers: list[str], device: str
) -> None:
    """Train each needed teacher and cache its targets, unless already done."""
    from training.targets import cache_linguistic, cache_prosodic, target_path
    from training.teachers import train_linguistic, train_prosodic

    y = {p: np.array([cfg.labels.index(u.label) for u in parts[p]]) for p in PARTS}
    targets_dir = fold_dir / "targets"
    feats: dict[str, list[np.ndarray]] | None = None
    for teacher in teachers:
        tdir = fold_dir / "teachers" / teacher
        metrics_file = tdir / "metrics.json"
        if teacher == "pros" and feats is None:
            cache = (
                Path(cfg.prosody_cache)
                if cfg.prosody_cache
                else Path(cfg.run_dir) / "cache" / "prosody"
            )
            feats = prosodic_features(cfg, parts, cache)
        if metrics_file.is_file():
            log.info("%s teacher: done, skipped (%s)", teacher, metrics_file)
        else:
            started = time.monotonic()
            opts = teacher_options(cfg, teacher, device)
            if teacher == "ling":
                metrics = train_linguistic(
                    parts, y, cfg.labels, model=cfg.ling_model, dropout=cfg.ling_dropout,
                    max_tokens=cfg.ling_max_tokens, opts=opts, out_dir=tdir,
                )  # fmt: skip
            else:
                metrics = train_prosodic(
                    feats, y, cfg.labels, hidden=cfg.pros_hidden, layers=cfg.pros_layers,
                    dropout=cfg.pros_dropout, max_frames=cfg.pros_max_frames, opts=opts, out_dir=tdir,
                )  # fmt: skip
            metrics["seconds"] = round(time.monotonic() - started, 1)
            metrics_file.write_text(json.dumps(metrics, indent=1), encoding="utf-8")
            log.info(
                "%s teacher: best epoch %d, valid UA %.3f, test UA %.3f WA %.3f (%.0fs)",
                teacher, metrics["best_epoch"], metrics["valid"]["ua"], metrics["test"]["ua"],
                metrics["test"]["wa"], metrics["seconds"],
            )  # fmt: skip
        out = target_path(targets_dir, teacher)
        if out.is_file():
            continue
        bs = getattr(cfg, f"{teacher}_batch_size")
        if teacher == "ling":
            cache_linguistic(tdir, parts["train"], cfg.ling_max_tokens, bs, device, out)
        else:
            cache_prosodic(tdir, parts["train"], feats["train"], bs, device, out)
        log.info("%s targets cached: %s", teacher, out)


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
) -> dict:
    """Train (or resume) one student and score its best and last checkpoints. ``carriers``:
    what carries each test utterance's label (synthetic corpora), for per-subset test UA."""
    sdir = student_dir(cfg, fold_dir, variant, seed)
    if (sdir / DONE).is_file():
        log.info("student %s seed %d: done, skipped (%s)", variant, seed, sdir)
        return json.loads((sdir / DONE).read_text(encoding="utf-8"))
    base = loss_weights(cfg)
    weights = base.for_variant(variant)
    used = [t for t in TEACHERS if weights.kd(t) > 0 or weights.emb(t) > 0]
    data["train"].targets = {t: targets[t] for t in used}
    score = scorer(cfg.labels)
    started = time.monotonic()
    opts = student_options(cfg, weights, seed, f"student {variant} s{seed}")
    trained = train_student(data["train"], data["valid"], opts, sdir, accelerator, score)
    result = {
        "fold": fold,
        "variant": variant,
        "seed": seed,
        "weights": weights.__dict__,
        **trained,
    }
    for which in ("best", "last"):
        student = load_student(sdir / which).to(accelerator.device)
        scored = {}
        for part in ("valid", "test"):
            logits, _ = predict(student, data[part], cfg.eval_batch_size, accelerator)
            scored[part] = logits
            result[f"{part}_{which}"] = score(data[part].y, logits)
            if part == "test" and carriers is not None:
                subsets = {n: carriers == n for n in SUBSETS if (carriers == n).any()}
                result[f"subsets_{which}"] = {
                    n: {**brief(score(data[part].y[m], logits[m])), "n": int(m.sum())}
                    for n, m in subsets.items()
                }
        if which == "best" and student.layer_weights is not None:
            result["layer_weights"] = student.layer_weights
        if which == "best":
            # The temperature is fitted on the validation speakers; test only reports it.
            result["calibration"] = calibration_report(
                scored["valid"], data["valid"].y, scored["test"], data["test"].y
            )
            if accelerator.is_main_process:
                plot_reliability(
                    scored["test"], data["test"].y, result["calibration"]["temperature"],
                    sdir / "reliability.png", f"{variant} s{seed}: test speakers",
                )  # fmt: skip
    result["seconds"] = round(time.monotonic() - started, 1)
    log.info(
        "student %s seed %d: test UA %.3f (best valid, epoch %d) / %.3f (last epoch)",
        variant, seed, result["test_best"]["ua"], result["best_epoch"], result["test_last"]["ua"],
    )  # fmt: skip
    if accelerator.is_main_process:
        summary = {
            "dataset": cfg.dataset, "protocol": cfg.protocol, "fold": fold,
            "backbone": cfg.student_model, "epoch": result["best_epoch"], "labels": list(cfg.labels),
            "valid": brief(result["valid_best"]), "test": brief(result["test_best"]),
            "seed": seed, "variant": variant, "calibration": result["calibration"],
        }  # fmt: skip
        (sdir / "best" / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (sdir / DONE).write_text(json.dumps(result, indent=1), encoding="utf-8")
    accelerator.wait_for_everyone()
    return result


# --- the recipe -------------------------------------------------------------------------------


def run(cfg: Config) -> dict:
    """Run (or resume) everything ``cfg`` asks for; returns the metrics written to metrics.json."""
    accelerator = make_accelerator(cfg)
    main_process = accelerator.is_main_process
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
    utts = load_utterances(cfg, accelerator)
    folds = select_folds(
        cfg, make_folds(utts, cfg.protocol, valid_speakers=cfg.valid_speakers, seed=cfg.seed)
    )
    plan = student_plan(cfg)
    base = loss_weights(cfg)
    teachers = teachers_needed(plan, base)
    students, teacher_metrics, histories = [], [], {}
    for fold in folds:
        fold_dir = run_dir / "folds" / fold.name
        if main_process:
            write_fold(fold, fold_dir)
        accelerator.wait_for_everyone()
        parts = read_fold(fold_dir)
        if main_process:
            log.info(
                "fold %s: train %d utts (%d speakers), valid %d (%s), test %d (%s)",
                fold.name, len(parts["train"]), len({u.speaker for u in parts["train"]}),
                len(parts["valid"]), ",".join(sorted({u.speaker for u in parts["valid"]})),
                len(parts["test"]), ",".join(sorted({u.speaker for u in parts["test"]})),
            )  # fmt: skip
            teacher_stages(cfg, fold_dir, parts, teachers, str(accelerator.device))
        accelerator.wait_for_everyone()
        data = {
            p: AudioSet(
                [u.audio_path for u in parts[p]],
                np.array([cfg.labels.index(u.label) for u in parts[p]]),
                cache=cfg.cache_audio,
                durations=[u.duration for u in parts[p]],
            )
            for p in PARTS
        }
        targets = load_targets(fold_dir / "targets", teachers, [u.id for u in parts["train"]])
        carriers = np.array([u.extra.get("carrier", "") for u in parts["test"]])
        for variant, seed in plan:
            result = run_student(
                cfg, fold.name, fold_dir, variant, seed, data, targets, accelerator,
                carriers if carriers.any() else None,
            )  # fmt: skip
            students.append(result)
            if fold is folds[0] and seed == plan[0][1]:
                histories[variant] = result["history"]
        teacher_metrics.append(read_teacher_metrics(fold_dir))
    metrics = {
        "config": cfg.to_dict(),
        "folds": [f.name for f in folds],
        "summary": aggregate(students, teacher_metrics),
        "teachers": teacher_metrics,
        "students": [{k: v for k, v in s.items() if k != "history"} for s in students],
        "seconds": round(time.monotonic() - started, 1),
    }
    if main_process:
        write_report(cfg, run_dir, folds, students, teacher_metrics, histories, metrics)
    accelerator.wait_for_everyone()
    if cfg.export and main_process:
        from export import export_run

        out = export_run(run_dir, cfg.export, fold=folds[0].name, int8=cfg.int8)
        log.info("exported the best student of fold %s to %s", folds[0].name, out)
    accelerator.wait_for_everyone()
    return metrics


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
    table = results_table(students, teachers, title) + subset_table(students)
    table += calibration_table(students)
    note = (
        "\nUA/WA in % on the held-out test speakers, mean ± std over (fold, seed) runs; teachers "
        "over folds. 'best valid' = the epoch with the best validation UA, 'last epoch' = the "
        f"final epoch. Total time {metrics['seconds'] / 60:.1f} min.\n"
    )
    (run_dir / "results.md").write_text(table + note, encoding="utf-8")
    for fold, fold_teachers in zip(folds, teachers, strict=True):
        for name, tm in fold_teachers.items():
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
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
