"""The EmoDistill recipe, top to bottom; each stage is a module of ``training.stages``.

    data -> transcribe -> prosody -> teachers -> targets -> students -> refit -> report -> export

Every stage writes into the run directory and is skipped when its output exists, so a killed
run resumes (a student from its last finished epoch; a transcription from its last batch).
Under ``torchrun`` the data, transcribe, prosody, teacher and target stages run on rank 0 while the other ranks wait on a marker file
(``training.runs.MainFirst``); the students train on all processes and only rank 0 writes.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

from accelerate import Accelerator

from training.config import Config
from training.data.utterance import Utterance
from training.fit.targets import load_targets, without_scripted
from training.runs import MainFirst, stage
from training.stages import (
    data,
    export,
    prosody,
    refit,
    report,
    students,
    targets,
    teachers,
    transcribe,
    transfer,
)

log = logging.getLogger("emodistill.training")


def run(cfg: Config, accelerator: Accelerator) -> dict:
    """Run (or resume) everything ``cfg`` asks for; returns the metrics written to metrics.json."""
    run_dir = Path(cfg.run_dir)
    rank, device = accelerator.process_index, str(accelerator.device)
    started = time.monotonic()
    main_first = MainFirst(accelerator, run_dir)

    plan = students.plan(cfg)  # the (variant, seed) students of every fold
    weights = students.loss_weights(cfg)
    needed = teachers.needed(plan, weights)
    # 1. data: the folds of the protocol's split; their transcripts (Whisper where the dataset
    # has none)
    with stage("data", run_dir, rank):
        folds = data.folds(cfg, data.load_utterances(cfg, main_first))
    with stage("transcribe", run_dir, rank) as record:
        folds, transcribed = transcribe.fold_transcripts(
            cfg, folds, "ling" in needed, main_first, device
        )
        record.update(transcribed, skipped=not transcribed.get("transcribed"))
    # the unlabelled transfer set and the vocabulary probe (empty unless configured)
    transfer_utts = transfer.transfer_utterances(cfg, main_first)
    probes = transfer.probe_utterances(cfg, main_first)

    results, teacher_metrics, histories = [], [], {}
    for fold in folds:
        fold_dir = run_dir / "folds" / fold.name
        parts = data.fold_parts(fold, fold_dir, main_first)

        # 2-4. prosody, teachers, targets: rank 0 alone
        dims = teachers.dimensions_needed(plan, weights, parts["train"])
        with stage("teachers", run_dir, rank, fold=fold.name) as record:
            # A resumed run's finished stages are recorded as skipped (not timed as work).
            record["skipped"] = all(teachers.done(fold_dir, t, dims) for t in needed)
            work = functools.partial(fit_teachers, cfg, fold_dir, parts, needed, device, dims)
            main_first.run(f"teachers-{fold.name}", work)
        if transfer_utts and needed:
            work = functools.partial(
                transfer.make_transfer_targets, cfg, fold_dir, transfer_utts, needed, device, dims
            )
            main_first.run(f"transfer-targets-{fold.name}", work)
        probe_reference = (
            main_first.run(
                f"probe-{fold.name}",
                functools.partial(transfer.teacher_probe_scores, cfg, fold_dir, probes, device),
            )
            if probes
            else None
        )

        # 5-6. students and their refits: every process
        audio = data.student_data(cfg, fold.name, parts)
        cached = load_targets(fold_dir / "targets", needed, [u.id for u in parts["train"]])
        if needed:
            audio["train"], cached = transfer.with_transfer(
                cfg, fold_dir, audio["train"], cached, transfer_utts, needed
            )
        cached = without_scripted(cached, parts["train"], cfg.scripted_corpora)
        audio.update({f"probe_{part}": data.audio_set(cfg, us) for part, us in probes.items()})
        carriers = data.test_carriers(cfg, parts)
        corpora = data.test_corpora(cfg, parts)
        for variant, seed in plan:
            sdir = students.student_dir(cfg, fold_dir, variant, seed)
            info = {"fold": fold.name, "variant": variant, "seed": seed}
            with stage("student", run_dir, rank, **info) as record:
                record["skipped"] = (sdir / students.DONE).is_file()
                result = students.run_student(
                    cfg, fold.name, fold_dir, variant, seed, audio, cached, accelerator,
                    carriers, data.speakers_by_part(parts), corpora, probe_reference,
                )  # fmt: skip
            if cfg.refit and parts["valid"]:
                with stage("refit", run_dir, rank, **info) as record:
                    record["skipped"] = (sdir / "refit" / students.DONE).is_file()
                    result["refit"] = refit.run_refit(
                        cfg, fold_dir, variant, seed, result, parts, audio, needed, accelerator
                    )
            results.append(result)
            if fold is folds[0] and seed == plan[0][1]:
                histories[variant] = result["history"]
        teacher_metrics.append(teachers.read_metrics(fold_dir) if parts["test"] else {})

    # 7. report: rank 0
    metrics = report.collect(cfg, folds, results, teacher_metrics, time.monotonic() - started)
    metrics["transcripts"] = transcribed
    if accelerator.is_main_process:
        report.write_report(cfg, run_dir, folds, results, teacher_metrics, histories, metrics)

    # 8. export: rank 0, the first fold's student
    if cfg.export:
        with stage("export", run_dir, rank):
            work = functools.partial(export.export_model, cfg, run_dir, folds[0].name)
            main_first.run("export", work)
        log.info("exported the student of fold %s to %s", folds[0].name, cfg.export)
    main_first.close()
    return metrics


def fit_teachers(
    cfg: Config,
    fold_dir: Path,
    parts: dict[str, list[Utterance]],
    needed: list[str],
    device: str,
    dims: bool,
) -> None:
    """The fold's prosodic features (when the prosodic teacher is still to train), then each
    teacher still to train and its targets."""
    pending = teachers.pending(fold_dir, needed, dims)
    if not pending:  # a resumed run: no prosody to hash or load
        return
    feats = prosody.fold_features(cfg, parts, fold_dir) if "pros" in pending else None
    for teacher in pending:
        tdir = fold_dir / "teachers" / teacher
        teachers.fit_teacher(cfg, teacher, parts, feats, tdir, device, f"{teacher} teacher")
        targets.make_targets(cfg, teacher, fold_dir, parts, feats, device, dims)
