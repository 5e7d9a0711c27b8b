"""Stage 5, students: each planned (variant, seed) student trained on the fold's training
speakers against the cached targets, then scored on its validation and test speakers.

The main student lives in ``FOLD/student/`` (what export reads), the ablation's beside it in
``FOLD/students/VARIANT-seedS/``. ``result.json`` marks a student done; a killed one resumes
from its last finished epoch.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from training.config import Config
from training.data.corpora import corpus_names
from training.data.sources import provenance
from training.eval.calibration import calibration_report, plot_reliability, test_calibration
from training.eval.reports import brief, ccc_scores, scorer
from training.fit.augment import AugmentOptions
from training.fit.batches import AudioSet
from training.fit.checkpoints import TRAINER_STATE
from training.fit.loop import StudentOptions, predict_outputs, release_host_memory, train_student
from training.fit.losses import TEACHERS, LossWeights
from training.models.student import is_pretrained, load_student

log = logging.getLogger("emodistill.training")
DONE = "result.json"
# Test subsets reported when the corpus records what carries each label (the synthetic one).
SUBSETS = ("words_only", "prosody_only")


def plan(cfg: Config) -> list[tuple[str, int]]:
    """The (variant, seed) students to train: every variant x seed with ``--ablation``."""
    if cfg.ablation:
        return [(v, s) for v in cfg.variants for s in cfg.seeds]
    return [(cfg.variant, cfg.seed)]


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
        transfer_temperature=cfg.transfer_temperature,
    )


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
        max_steps=cfg.max_steps, augment=AugmentOptions.from_config(cfg),
        transfer_mix=cfg.transfer_mix, desc=desc,
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
    corpora: dict[str, np.ndarray] | None = None,
    probe_reference: dict[str, dict] | None = None,
) -> dict:
    """Train (or resume) one student and score its best and last checkpoints. ``carriers``:
    what carries each test utterance's label (synthetic corpora), for per-subset test UA.
    ``speakers``: who trained, validated and tested (recorded in the result and summary).
    ``corpora``: {corpus: mask over the test utterances}, for per-corpus scores and calibration.
    ``data["probe_PART"]``: the vocabulary probe's parts, scored beside the test speakers
    (``probe_reference``: the linguistic teacher's scores on them, recorded with them).
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
    if not used:  # nothing to learn from unlabelled utterances without a teacher
        opts = dataclasses.replace(opts, transfer_mix=0.0)
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
        done = has_valid or not has_test  # without validation, "last" is scored here first
        if which == "last" and done and trained["best_epoch"] == len(trained["history"]):
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
            if part == "test" and corpora is not None:
                result[f"corpora_{which}"] = {
                    c: {**score(data[part].y[m], logits[m]), "n": int(m.sum())}
                    for c, m in corpora.items()
                }
        probes = [p for p in data if p.startswith("probe_")]
        if probes:
            result[f"probe_{which}"] = {
                p[len("probe_") :]: {
                    **brief(score(data[p].y, predict_outputs(
                        student, data[p], cfg.eval_batch_size, accelerator)[0])),
                    "n": len(data[p]),
                }
                for p in probes
            }  # fmt: skip
            if probe_reference:
                result["probe_teacher"] = probe_reference
        if which == "best" and student.layer_weights is not None:
            result["layer_weights"] = student.layer_weights
        if which == "best" and has_test:
            # The temperature is fitted on the validation speakers; test only reports it.
            result["calibration"] = calibration_report(
                scored["valid"], data["valid"].y, scored["test"], data["test"].y
            )
            if corpora is not None:  # the same temperature, scored on each corpus's speakers
                t = result["calibration"]["temperature"]
                result["calibration_corpora"] = {
                    c: test_calibration(scored["test"][m], data["test"].y[m], t)
                    for c, m in corpora.items()
                }
            if accelerator.is_main_process:
                plot_reliability(
                    scored["test"], data["test"].y, result["calibration"]["temperature"],
                    sdir / "reliability.png", f"{variant} s{seed}: test speakers",
                )  # fmt: skip
        del student
    if not has_valid:
        # Nothing to select on: the last epoch is the model (leave-one-corpus-out, a fold of
        # two speakers), so its scores are the ones reported as chosen.
        result.update({f"{k[:-5]}_best": v for k, v in list(result.items()) if k.endswith("_last")})
    release_host_memory()
    result["seconds"] = round(time.monotonic() - started, 1)
    if has_test:
        log.info(
            "student %s seed %d: test UA %.3f (best valid, epoch %d) / %.3f (last epoch)",
            variant, seed, result["test_best"]["ua"], result["best_epoch"],
            result["test_last"]["ua"],
        )  # fmt: skip
    summary = {
        "fold": fold, "epoch": result["best_epoch"],
        "valid": brief(result["valid_best"]) if has_valid else None,
        "test": brief(result["test_best"]) if has_test else None,
        "seed": seed, "variant": variant, "calibration": result.get("calibration"),
        "speakers": result["speakers"],
    }  # fmt: skip
    return finish(cfg, sdir, "best" if has_valid else "last", result, summary, accelerator)


def finish(
    cfg: Config, sdir: Path, checkpoint: str, result: dict, summary: dict, accelerator: Accelerator
) -> dict:
    """The closing step of a student's (or a refit's) training: rank 0 writes the checkpoint's
    ``summary.json`` (``summary`` with the run's dataset, protocol, backbone, labels and the
    training corpora's licences: what export reads) and ``result.json`` (``result``: marks the training done), and drops the
    trainer state; every rank waits for it. Returns ``result``."""
    if accelerator.is_main_process:
        summary = {
            "dataset": cfg.dataset, "protocol": cfg.protocol, "backbone": cfg.student_model,
            "labels": list(cfg.labels), **provenance(corpus_names(cfg.dataset, cfg.data_path)),
            **summary,
        }  # fmt: skip
        (sdir / checkpoint / "summary.json").write_text(
            json.dumps(summary, indent=1), encoding="utf-8"
        )
        (sdir / DONE).write_text(json.dumps(result, indent=1), encoding="utf-8")
        drop_trainer_state(sdir)
    accelerator.wait_for_everyone()
    return result


def drop_trainer_state(sdir: Path) -> None:
    """A finished student needs no optimizer state (~760 MB for hubert-base): only a killed run
    resumes from it, and result.json now marks this one done. When the best epoch was the
    last, ``best/`` and ``last/`` hold the same weights: they become one file on disk."""
    (sdir / "last" / TRAINER_STATE).unlink(missing_ok=True)
    share_identical_files(sdir / "best", sdir / "last")


def share_identical_files(source: Path, target: Path) -> int:
    """Replace each file of ``target`` whose bytes equal the file of the same name in
    ``source`` by a hard link to it (~360 MB per hubert-base checkpoint). Checkpoints are
    always written as new files (``training.fit.checkpoints.checkpoint``), never changed in
    place, so a shared file is never rewritten through the other name. Returns the bytes saved;
    a file system without hard links saves nothing and changes nothing."""
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
