"""Pieces of benchmarks/gpu_check.sh: the checks that need one NVIDIA GPU.

    python benchmarks/gpu_check.py train --out DIR [--dry-run]   bf16 steps/s + peak GPU memory
    python benchmarks/gpu_check.py onnx  --out DIR [--dry-run]   CUDA EP vs CPU parity, audio-s/s
                                                                (HuBERT-base and a Whisper
                                                                tiny.en student; plain runs and
                                                                I/O binding, batch 1 and 8)
    python benchmarks/gpu_check.py serve --out DIR [--dry-run]   the server's /health on CUDA

``--dry-run`` runs the same code on the CPU with the tiny student and few steps: it proves the
script itself works on a machine without a GPU (the figures are then CPU figures and say so).
Each command writes DIR/<command>.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECONDS = 4.0  # clip length of the training batch and the ONNX throughput rows
SR = 16_000


def _model(dry_run: bool) -> str:
    return "tiny" if dry_run else "hubert-base"  # the HuBERT-base architecture, random init


def _whisper(dry_run: bool) -> str:
    """The shipped backbone: Whisper tiny.en's real encoder (random head); a tiny random
    Whisper config in the dry run."""
    return "tiny-whisper" if dry_run else "whisper-tiny.en"


def train(out: Path, dry_run: bool) -> dict:
    """bf16 autocast training steps of the student (LayerDrop and masking on, CNN frozen as in
    the IEMOCAP preset) through the recipe's own loop pieces: steps/s and peak GPU memory."""
    import torch

    from training.data.utterance import EMOTIONS
    from training.fit.loop import DistillModel, StudentOptions, new_student, param_groups
    from training.fit.losses import LossWeights, distill_loss

    cuda = torch.cuda.is_available() and not dry_run
    device = torch.device("cuda" if cuda else "cpu")
    opts = StudentOptions(model=_model(dry_run), labels=EMOTIONS, batch_size=8)
    weights = LossWeights().for_variant("full")
    student = new_student(opts, {"ling": 384, "pros": 256})
    student.freeze_feature_encoder()
    model = DistillModel(student).to(device).train()
    optimizer = torch.optim.AdamW(param_groups(student, opts), lr=1e-4)
    batch, n = opts.batch_size, int(SECONDS * SR)
    audio = torch.randn(batch, n, device=device) * 0.1
    lengths = torch.full((batch,), n, device=device)
    y = torch.arange(batch, device=device) % 4
    targets = {
        t: {"logits": torch.randn(batch, 4, device=device),
            "embedding": torch.randn(batch, d, device=device)}
        for t, d in (("ling", 384), ("pros", 256))
    }  # fmt: skip
    dtype = torch.bfloat16 if cuda else torch.float32
    steps, warmup = (3, 1) if dry_run else (30, 5)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=cuda):
            logits, _, projected, _ = model(audio, lengths)
            loss, _ = distill_loss(logits, projected, y, targets, weights)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu (dry run)",
        "model": opts.model, "precision": "bf16 autocast" if cuda else "fp32",
        "batch": f"{batch} x {SECONDS} s", "timed_steps": steps - warmup,
        "steps_per_s": round((steps - warmup) / elapsed, 2),
        "audio_s_per_s": round((steps - warmup) * batch * SECONDS / elapsed, 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss_finite": bool(torch.isfinite(loss).item()),
    }  # fmt: skip


def export_model(out: Path, dry_run: bool, name: str | None = None) -> Path:
    """The model directory of ``name`` (default: the HuBERT-base architecture), once."""
    import torch

    from export import build_model_dir
    from training.data.utterance import EMOTIONS
    from training.models.student import Student, build_classifier

    name = name or _model(dry_run)
    model_dir = out / ("model" if name == _model(dry_run) else f"model-{name}")
    if not (model_dir / "model.json").is_file():
        torch.manual_seed(0)
        # Whisper students pool a weighted sum of their layers and predict dimensions, as the
        # demo student does.
        whisper = "whisper" in name
        options = {"use_weighted_layer_sum": True} if whisper else {}
        student = Student(build_classifier(name, EMOTIONS, **options), dimensions=whisper)
        build_model_dir(student.eval(), model_dir, hf=False)
    return model_dir


def onnx(out: Path, dry_run: bool) -> dict:
    """The exported models on the CUDA execution provider: parity with the CPU provider and
    audio-seconds per second at batch 1 and 8, by ``session.run`` (numpy in and out), by I/O
    binding with the inputs already on the device (the provider's ceiling), and through the
    server's own Runtime (its I/O binding: inputs copied from the host, outputs back)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not dry_run and "CUDAExecutionProvider" not in available:
        raise SystemExit(f"no CUDAExecutionProvider in {available}: pip install onnxruntime-gpu")
    models = {}
    for name in (_model(dry_run), _whisper(dry_run)):
        models[name] = onnx_model(export_model(out, dry_run, name), dry_run)
    first = models[_model(dry_run)]
    return {
        "provider": first["provider"], "model": _model(dry_run),
        "max_abs_diff_logits_vs_cpu": first["max_abs_diff_logits_vs_cpu"],
        **first["speed"]["run"], "clip_seconds": SECONDS,
        "models": models,
    }  # fmt: skip


def onnx_model(model_dir: Path, dry_run: bool) -> dict:
    """One model directory: CUDA vs CPU logits, and the three ways of running it."""
    import onnxruntime as ort

    from export.parity import pad_batch, probe_signal
    from server.inference.runtime import Runtime

    model = model_dir / "model.onnx"
    gpu_providers = ["CPUExecutionProvider"] if dry_run else ["CUDAExecutionProvider"]
    gpu = ort.InferenceSession(str(model), providers=gpu_providers)
    cpu = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = [probe_signal(int(SECONDS * SR), seed=i) for i in range(8)]
    rows += [probe_signal(n, seed=20 + i) for i, n in enumerate((8_000, 24_000, 56_000))]
    diff = 0.0
    for group in (rows[:1], rows[8:], rows[:8]):
        audio, lengths = pad_batch(group)
        feeds = {"audio": audio, "lengths": lengths}
        a, b = gpu.run(["logits"], feeds)[0], cpu.run(["logits"], feeds)[0]
        diff = max(diff, float(np.abs(a - b).max()))
    device = "cpu" if dry_run else "cuda"
    runtime = Runtime.load(model_dir, device=device, threads=0)
    runtime.use_io_binding(True)  # on CUDA it binds anyway; in the dry run: the same path
    outputs = [o.name for o in gpu.get_outputs()]
    speed: dict[str, dict] = {"run": {}, "io_binding_device_inputs": {}, "server_runtime": {}}
    for batch in (1, 8):
        audio, lengths = pad_batch(rows[:batch])
        feeds = {"audio": audio, "lengths": lengths}
        binding = gpu.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        for name in outputs:
            binding.bind_output(name, device)
        calls = {
            "run": lambda feeds=feeds: gpu.run(None, feeds),
            "io_binding_device_inputs": lambda b=binding: gpu.run_with_iobinding(b),
            "server_runtime": lambda a=audio, n=lengths: runtime.run(a, n),
        }
        rounds = 5 if dry_run else 50
        for path, call in calls.items():
            for _ in range(3):
                call()
            started = time.perf_counter()
            for _ in range(rounds):
                call()
            speed[path][f"batch_{batch}_audio_s_per_s"] = round(
                rounds * batch * SECONDS / (time.perf_counter() - started), 1
            )
    return {
        "provider": gpu.get_providers()[0], "server_provider": runtime.provider,
        "max_abs_diff_logits_vs_cpu": diff, "speed": speed, "clip_seconds": SECONDS,
    }  # fmt: skip


def serve(out: Path, dry_run: bool) -> dict:
    """Start the server on the exported model with EMODISTILL_DEVICE=cuda; /health must name
    the CUDA provider."""
    model_dir = export_model(out, dry_run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ, "EMODISTILL_MODEL_DIR": str(model_dir), "EMODISTILL_PORT": str(port),
        "EMODISTILL_HOST": "127.0.0.1", "EMODISTILL_DEVICE": "cpu" if dry_run else "cuda",
    }  # fmt: skip
    log = (out / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        body, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = json.loads(r.read())
                    break
            except OSError:
                time.sleep(1)
        if body is None:
            raise SystemExit(f"the server did not answer /health; see {out / 'server.log'}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    expected = "CPUExecutionProvider" if dry_run else "CUDAExecutionProvider"
    return {"health": body, "expected_provider": expected, "ok": body.get("provider") == expected}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("train", "onnx", "serve"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model: test the script")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"train": train, "onnx": onnx, "serve": serve}[args.command](args.out, args.dry_run)
    result["dry_run"] = args.dry_run
    (args.out / f"{args.command}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
