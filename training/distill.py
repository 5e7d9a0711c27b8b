"""``python -m training.distill``: the command line of the EmoDistill recipe (``training.recipe``):
the configuration, the processes and the log, then every stage, resumable.

    data -> transcribe (Whisper, only where the data has no text) -> prosody -> teachers
    (linguistic, prosodic) -> targets -> student(s) -> refit -> report -> export

Every stage writes into the run directory and is skipped when its output exists, so a killed
run resumes (the student from its last finished epoch). Under ``torchrun`` the cheap stages
(data, prosody, teachers, targets) run on rank 0 while the others wait; the student trains on
all processes (DDP via ``accelerate``) and only rank 0 writes.

    python -m training.distill --preset demo
    python -m training.distill --preset demo --ablation --seeds=0,1,2 --run_dir=runs/ablation
    python -m training.distill --preset iemocap --data_path=/data/IEMOCAP_full_release --folds=all
    python -m training.distill --dataset=manifest --data_path=mine.csv   # path,label,speaker
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from tqdm.auto import tqdm

from training import recipe
from training.config import Config, ConfigError, describe, load_config, preset_names
from training.data.corpus import CorpusError
from training.data.manifest import ManifestError
from training.data.splits import SplitError
from training.stages.export import ExportFailed

log = logging.getLogger("emodistill.training")


class _TqdmHandler(logging.StreamHandler):
    """Log lines that do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
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


def run(cfg: Config) -> dict:
    """Set up the processes, the run directory, its log and ``config.json``, then run (or
    resume) ``training.recipe``; returns the metrics written to metrics.json."""
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
    return recipe.run(cfg, accelerator)


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
    except (ConfigError, ManifestError, CorpusError, SplitError) as exc:  # before any training
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExportFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
