"""Full fine-tuning over several devices: launch the FSDP worker, read what it measured, do the sharding arithmetic.

Used in notebooks/04_scaling_out and tests/test_scaling.py. The training itself is in ftkit.chapters.scaling.worker
(PyTorch FSDP through accelerate); this module only starts it the way a learner would type it, and compares runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ftkit.core.builtin import model_path
from ftkit.core.configs import model_shape
from ftkit.core.estimate import SHARDING, estimate_memory
from ftkit.core.memory import GB

WORKER = "ftkit.chapters.scaling.worker"  # the training script, run as a module: `python -m ftkit.chapters.scaling.worker`
CPU_CONFIG = Path(__file__).with_name("fsdp_cpu_2proc.yaml")  # 2 CPU processes (gloo), shipped with the package
# Output lines of the script worth showing live; the rest (library warnings) is kept for error messages.
PROGRESS_PREFIXES = ("step ",)


def free_port() -> int:
    """A TCP port nobody listens on now, for the processes' rendezvous (two runs at once must not share one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(n_processes: int, script_args: list[str], config: Path = CPU_CONFIG) -> list[str]:
    """The command line: `accelerate launch --config_file CONFIG ...` for several processes, plain python for one.

    One process runs the script without any launcher: no process group, no FSDP, the whole model in one place.
    `python -m accelerate.commands.launch` is the `accelerate launch` command of this very Python environment.
    """
    if not (isinstance(n_processes, int) and n_processes >= 1):
        raise ValueError(f"n_processes must be a positive integer, got {n_processes!r}")
    if n_processes == 1:
        return [sys.executable, "-m", WORKER, *script_args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", str(n_processes), "--main_process_port", str(free_port()), "--module", WORKER,
            *script_args]


def run_sharded(model: str = "tiny-random", *, n_processes: int = 2, max_steps: int = 4, batch_size: int = 4,
                max_seq_len: int = 128, learning_rate: float = 1e-4, lr_scheduler: str = "cosine", warmup_steps: int = 0,
                max_grad_norm: float = 1.0, output_dir=None, save: bool = True, timeout: float = 900,
                progress: bool = True, config: Path = CPU_CONFIG) -> dict:
    """Run the worker (ftkit.chapters.scaling.worker) in n_processes (FSDP) or one plain process; return its metrics.json as a dict.

    batch_size is the GLOBAL batch (each process trains on batch_size / n_processes rows); the training settings are
    the worker's (the course's: answer-only loss, clipping at 1.0, cosine). Adds "command", "wall_time_s" and
    "output_dir". Raises RuntimeError with the end of the output if the run fails.
    """
    import torch

    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix=f"fsdp-{n_processes}proc-"))
    out.mkdir(parents=True, exist_ok=True)
    path = model_path(model)
    # the data are tokenized here, once, so the processes need not import ftkit (seconds saved per process)
    torch.save(course_rows(path, max_steps * batch_size, max_seq_len), out / "rows.pt")
    args = ["--model", path, "--data", str(out / "rows.pt"), "--out", str(out),
            "--max-steps", str(max_steps), "--batch-size", str(batch_size), "--max-seq-len", str(max_seq_len),
            "--learning-rate", str(learning_rate), "--lr-scheduler", lr_scheduler, "--warmup-steps", str(warmup_steps),
            "--max-grad-norm", str(max_grad_norm)] + ([] if save else ["--no-save"])
    cmd = launch_command(n_processes, args, config)
    package_parent = str(Path(__file__).resolve().parents[3])  # where `import ftkit` finds this very package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if n_processes == 1:
        env.setdefault("OMP_NUM_THREADS", "1")  # as the launcher gives each process: a fair comparison of step times
    if config == CPU_CONFIG:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes even where one GPU is visible (two ranks cannot share it)
    if progress:
        print(f"$ {' '.join(Path(c).name if c == sys.executable else c for c in cmd)}", flush=True)
    start, lines = time.perf_counter(), []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=out) as proc:
        try:
            for line in proc.stdout:
                lines.append(line.rstrip())
                if progress and line.startswith(PROGRESS_PREFIXES):
                    print("  " + line.rstrip(), flush=True)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    metrics_file = out / "metrics.json"
    if proc.returncode != 0 or not metrics_file.exists():
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"the {n_processes}-process run failed (exit code {proc.returncode}). Its last lines:\n{tail}")
    metrics = json.loads(metrics_file.read_text())
    metrics.update(command=cmd, wall_time_s=time.perf_counter() - start, output_dir=str(out))
    return metrics


def course_rows(model_dir, n_rows: int, max_seq_len: int, seed: int = 0) -> dict:
    """n_rows course conversations in the model's chat template, one a row, padded to the longest: input_ids,
    attention_mask and labels, the labels masked (-100) on the prompt and the padding, as the course's Trainer trains
    (ftkit.answer_batch). The rows carry different numbers of answer tokens: the worker averages over all of a batch's."""
    from transformers import AutoTokenizer

    from ftkit.core.data import answer_batch, load_course_dataset

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = load_course_dataset(n_train=n_rows, n_validation=1, n_test=1, n_heldout=1, seed=seed)["train"]
    return answer_batch(tokenizer, list(rows), max_len=max_seq_len)


def loss_gap(run_a: dict, run_b: dict) -> float:
    """Largest |loss_a - loss_b| over the steps of two runs (they must have the same number of steps)."""
    a, b = run_a["losses"], run_b["losses"]
    if len(a) != len(b):
        raise ValueError(f"the runs have {len(a)} and {len(b)} steps; compare runs of the same length")
    return max(abs(x - y) for x, y in zip(a, b))


def per_process(run: dict, bucket: str = "weights") -> list[int]:
    """Bytes of one bucket (weights, parameters, gradients, optimizer) held by each process of a run, rank order."""
    return [row[bucket] for row in run["per_process_bytes"]]


OFFLOAD = "zero3+offload"  # ZeRO-3 with the optimizer state in host RAM (ZeRO-Offload/Infinity, FSDP's CPU offload)


def sharding_table(models: dict, device_counts=(1, 2, 4, 8, 16, 32, 64), stages=("none", "zero1", "zero2", "zero3"),
                   *, seq_len: int = 0, batch_size: int = 1, **estimate_kwargs) -> list[dict]:
    """Per-device GiB of full fine-tuning with mixed-precision AdamW (16 B/param), for each model, stage and N.

    models: {label: config or KNOWN_CONFIGS name}. stages: names of SHARDING, or OFFLOAD: ZeRO-3 whose 12 B/param of
    optimizer state (fp32 master weights and two moments) live in host RAM, leaving 2 + 2 B/param on the GPUs; each
    row's "host_gib" is the host RAM that takes, all devices together. seq_len=0 leaves activations out (they depend
    on the batch and on checkpointing, not on sharding); give a seq_len to include them. Extra kwargs go to
    estimate_memory.
    """
    for stage in stages:
        if stage not in SHARDING and stage != OFFLOAD:
            raise ValueError(f"unknown stage {stage!r}; choose from {tuple(SHARDING) + (OFFLOAD,)}")
    rows = []
    for label, config in models.items():
        shape = model_shape(config)
        for stage in stages:
            for n in device_counts:
                est = estimate_memory(shape, "full", seq_len=max(seq_len, 1), batch_size=batch_size,
                                      mixed_precision=True, n_devices=n,
                                      sharding="zero3" if stage == OFFLOAD else stage, **estimate_kwargs)
                on_host = est.optimizer if stage == OFFLOAD else 0  # this device's shard of it, in host RAM
                states = est.weights + est.gradients + est.optimizer - on_host
                rows.append({"model": label, "params_b": shape.num_params() / 1e9, "sharding": stage,
                             "n_devices": n, "gib": (states + (est.activations if seq_len else 0)) / GB,
                             "bytes_per_param": states / shape.num_params(), "host_gib": on_host * n / GB})
    return rows


def smallest_n(rows: list[dict], model: str, sharding: str, gib_per_device: float) -> int | None:
    """The fewest devices on which a model's states fit in gib_per_device with one sharding (None: not even 64)."""
    fits = [r["n_devices"] for r in rows if r["model"] == model and r["sharding"] == sharding
            and r["gib"] <= gib_per_device]
    return min(fits) if fits else None


def bytes_per_param(run: dict) -> float:
    """Counted bytes of weights + gradients + optimizer state per parameter (numel x element size), all processes
    together: what the tensors are, not what the process needed (see `measured`)."""
    total = sum(row["weights"] + row["gradients"] + row["optimizer"] for row in run["per_process_bytes"])
    return total / run["n_params"]


def measured(run: dict, moment: str = "after_update", rank: int = 0, kind: str = "allocated") -> list[int]:
    """Bytes one process held at a moment of each step, above what it held before it loaded the model, as its backend
    measured them (the worker's Meter). moment: "before" (the step), "after_update" (right after the optimizer step:
    weights, gradients and AdamW state alive, activations freed) or "peak" (the last step's only). kind: "allocated" (the
    allocator's bytes: torch's on a GPU, glibc's malloc on the CPU) or "rss" (what the kernel gave the process,
    including what malloc keeps after a free)."""
    memory = run["per_process_bytes"][rank]["memory"][kind]
    return [value - memory["start"] for value in memory[moment]]


def step_trace(run: dict, rank: int = 0) -> tuple[list[float], list[float], dict]:
    """The last step of one process over time, as its Meter sampled it on the CPU: seconds into the step, MiB allocated
    above its memory before loading the model, and {phase: second it ended} (forward, backward, clipping, AdamW)."""
    memory = run["per_process_bytes"][rank]["memory"]
    seconds, values = zip(*memory["trace"]["samples"])
    return list(seconds), [(v - memory["allocated"]["start"]) / 2**20 for v in values], memory["trace"]["phases_end_s"]


def largest_unit(run: dict) -> dict | None:
    """The FSDP unit with the most parameters (what each process holds whole while it computes), or None (no FSDP)."""
    return max(run.get("fsdp_units") or [], key=lambda unit: unit["params"], default=None)


def max_weight_diff(folder_a, folder_b) -> float:
    """Largest |difference| between the weights of two saved model folders (loaded with from_pretrained)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftkit.core.quiet import quiet_loading

    with quiet_loading():  # no loading bar for a comparison
        a, b = (AutoModelForCausalLM.from_pretrained(f, dtype=torch.float32).state_dict() for f in (folder_a, folder_b))
    if a.keys() != b.keys():
        raise ValueError(f"the two checkpoints hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    return max((a[k] - b[k]).abs().max().item() for k in a)
