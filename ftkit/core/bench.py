"""How close the course's training step comes to what this machine can do: `python -m ftkit bench` (`make bench`).

In one process it measures the machine's matmul rate (bf16 and fp32), then, round after round with the methods in a
rotating order, one short real run per method (ftkit.run_experiment at the profile's batch): steady-state training
tokens/s, the share of the matmul rate those tokens need, peak memory, the run's fixed cost by phase, and generation
tokens/s when scoring. Medians over the rounds; another process on the machine slows every method of a round alike.

FLOPs per trained token (useful work, padding excluded): 6 per weight of a trainable matmul (forward, input gradient,
weight gradient), 4 per weight of a frozen one (no weight gradient: LoRA's and QLoRA's base), plus attention,
3 x 4 * layers * s * d_attn (QK^T and PV over the batch's padded length s, forward and two backward products).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
import shutil
import subprocess
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ftkit.core.models import logical_numel
from ftkit.core.profiles import Profile

METHODS = ("full", "lora", "qlora")
# Parts of a run that do not grow with its steps, for a model already loaded (a sweep's second run, a remedy):
FIXED_PARTS = ("prepare", "setup", "first_step_extra", "save")


def matmul_rate(dtype: torch.dtype = torch.bfloat16, n: int = 2048, trials: int = 15, repeats: int = 8) -> float:
    """FLOP/s this machine reaches on n x n matmuls at torch's thread count: the fastest of `trials` timings of
    `repeats` back-to-back products, after as many untimed. The fastest, not the median: what the machine can do is
    the question, and here the trials were bimodal (about 2.2 TFLOP/s in bf16, and 1.1-1.6 whenever something else
    ran), so a median moved by a third from one run to the next."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(repeats):
        a @ b
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def matmul_weights(model) -> tuple[int, int]:
    """(trainable, frozen) weights of the model's matmuls: every nn.Linear (a 4-bit one counts its logical values;
    lm_head counts once even when tied to the embeddings, which are a lookup, not a matmul)."""
    trainable = frozen = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight
            n = logical_numel(w)
            if w.requires_grad:
                trainable += n
            else:
                frozen += n
    return trainable, frozen


def flops_per_token(trainable: int, frozen: int, *, layers: int, attention_width: int, seq_len: int) -> float:
    """Training FLOPs per token (see the module's docstring)."""
    return 6 * trainable + 4 * frozen + 3 * 4 * layers * seq_len * attention_width


@dataclass
class MethodBench:
    """One method's medians over the rounds."""

    method: str
    tokens_per_s: float  # steady state (steps after the first): trained, non-padding tokens per second
    step_s: float  # the median steady step
    flops_per_token: float
    share_of_matmul: float  # tokens_per_s * flops_per_token / the matmul rate of the training precision
    peak_memory_bytes: int
    peak_memory_kind: str
    fixed_s: dict  # FIXED_PARTS and their sum "total"; "load" and "evaluation" (one validation pass) shown apart
    generation_tokens_per_s: float  # scoring: generated tokens per second of greedy decoding, test split
    rounds: list = field(default_factory=list)  # the per-round values the medians come from


def generation_rate(model, tokenizer, conversations, batch_size: int) -> float:
    """Generated tokens per second of the course's greedy decoding (ftkit.generate_answers) on some conversations."""
    from ftkit.core.generation import generate_answers

    start = time.perf_counter()
    answers = generate_answers(model, tokenizer, conversations, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    return sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers) / seconds


def measure_round(method: str, profile: Profile, steps: int, data, tokenizer) -> dict:
    """One real run of `steps` steps (one validation pass at its end, a save) and its generation rate."""
    from ftkit.core.models import free_memory
    from ftkit.core.train import run_experiment

    r = run_experiment(method, profile=profile, data=data, max_steps=steps, eval_every=steps, score_splits=(),
                       progress=False)
    model = r.trained_model
    conversations = [row["messages"][:-1] for row in data["test"]]
    gen = generation_rate(model, tokenizer, conversations, profile.gen_batch_size)
    trainable, frozen = matmul_weights(model)
    config = model.config
    steady = statistics.median(r.step_seconds[1:])
    tokens_per_step = r.tokens_per_s * (r.wall_time_s - r.seconds["evaluation"]) / r.steps
    width = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    flops = flops_per_token(trainable, frozen, layers=config.num_hidden_layers, attention_width=width,
                            seq_len=round(tokens_per_step / profile.batch_size))
    r.trained_model = model = None
    free_memory()
    return {"tokens_per_s": tokens_per_step / steady, "step_s": steady, "flops_per_token": flops,
            "first_step_extra": max(r.step_seconds[0] - steady, 0.0), "seconds": r.seconds,
            "peak_memory_bytes": r.peak_memory_bytes, "peak_memory_kind": r.peak_memory_kind,
            "generation_tokens_per_s": gen}


# Kernels by what they do, for step_anatomy: a profiled step's self time summed per group (a name ending in * is a
# prefix; every other kernel is "other").
KERNEL_GROUPS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product*", "aten::_softmax", "aten::_softmax_backward_data"),
    "copies and casts": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::empty_strided", "aten::empty"),
    "elementwise": ("aten::mul", "aten::mul_", "aten::add", "aten::add_", "aten::sub", "aten::div", "aten::pow",
                    "aten::rsqrt", "aten::mean", "aten::silu", "aten::silu_backward", "aten::neg", "aten::cat",
                    "aten::sum", "aten::fill_", "aten::zero_", "aten::where", "aten::masked_fill", "aten::cos",
                    "aten::sin"),
    "loss": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss*"),
    "optimizer": ("aten::_fused_adamw_", "aten::_foreach_*", "aten::linalg_vector_norm"),
}


def group_of(kernel: str) -> str:
    """The KERNEL_GROUPS group of a profiler event's name, or "other"."""
    for group, names in KERNEL_GROUPS.items():
        if kernel in names or any(n.endswith("*") and kernel.startswith(n[:-1]) for n in names):
            return group
    return "other"


def step_anatomy(method: str, profile: Profile, data, step: int = 3) -> dict:
    """Where one steady training step's time goes: the torch profiler's self CPU time per KERNEL_GROUPS group, in
    seconds; "kernels" is their sum and "step" the step's wall time with the profiler on (the difference: Python,
    autograd's bookkeeping, the Trainer's step)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    from transformers import TrainerCallback

    from ftkit.core.train import run_experiment

    class ProfileOneStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:
                self.prof = torch_profile(activities=[ProfilerActivity.CPU])
                self.prof.__enter__()
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                self.wall = time.perf_counter() - self.start
                self.prof.__exit__(None, None, None)

    probe = ProfileOneStep()
    run_experiment(method, profile=profile, data=data, max_steps=step, eval_every=step + 1, score_splits=(),
                   save=False, keep_model=False, progress=False, callbacks=[probe])
    seconds = dict.fromkeys(KERNEL_GROUPS, 0.0) | {"other": 0.0}
    for event in probe.prof.key_averages():
        seconds[group_of(event.key)] += event.self_cpu_time_total / 1e6
    return seconds | {"kernels": sum(seconds.values()), "step": probe.wall}


def summarise(method: str, rounds: list[dict], matmul: float) -> MethodBench:
    """The medians of one method's rounds."""
    med = lambda key: statistics.median(x[key] for x in rounds)  # noqa: E731
    part = lambda key: statistics.median(x["seconds"][key] for x in rounds)  # noqa: E731
    fixed = {"prepare": part("prepare"), "setup": part("setup"), "first_step_extra": med("first_step_extra"),
             "save": part("save")}
    fixed = fixed | {"total": sum(fixed.values()), "load": part("load"), "evaluation": part("evaluation")}
    tokens, flops = med("tokens_per_s"), med("flops_per_token")
    return MethodBench(method=method, tokens_per_s=tokens, step_s=med("step_s"), flops_per_token=flops,
                       share_of_matmul=tokens * flops / matmul, peak_memory_bytes=int(med("peak_memory_bytes")),
                       peak_memory_kind=rounds[0]["peak_memory_kind"], fixed_s=fixed,
                       generation_tokens_per_s=med("generation_tokens_per_s"), rounds=rounds)


def run_bench(profile: Profile, *, methods=METHODS, rounds: int = 3, steps: int = 6, progress: bool = True) -> dict:
    """The benchmark (see the module's docstring): a dict ready for results/bench.json."""
    from tqdm.auto import tqdm

    from ftkit.core.data import profile_dataset
    from ftkit.core.models import load_tokenizer

    if rounds < 1 or steps < 2:
        raise ValueError(f"rounds must be >= 1 and steps >= 2 (one warm-up step, then steady ones), got {rounds}, "
                         f"{steps}")
    rates = {"bf16": matmul_rate(torch.bfloat16), "fp32": matmul_rate(torch.float32)}
    data, tokenizer = profile_dataset(profile), load_tokenizer(profile.model)
    measured = {m: [] for m in methods}
    bar = tqdm(total=rounds * len(methods) + len(methods), desc="benchmark runs", disable=not progress)
    for r in range(rounds):
        for method in methods[r % len(methods):] + methods[:r % len(methods)]:  # rotate: no method always first
            measured[method].append(measure_round(method, profile, steps, data, tokenizer))
            bar.update()
    anatomy = {}
    for method in methods:
        anatomy[method] = step_anatomy(method, profile, data)
        bar.update()
    bar.close()
    matmul = rates.get(profile.precision, rates["fp32"])
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(), "threads": torch.get_num_threads(),
        "profile": profile.name, "precision": profile.precision, "batch_size": profile.batch_size,
        "steps_per_run": steps, "rounds": rounds,
        "matmul_flops_per_s": rates, "matmul_compared_with": profile.precision if profile.precision in rates else "fp32",
        "methods": {m: asdict(summarise(m, measured[m], matmul)) | {"anatomy": anatomy[m]} for m in methods},
    }


def versions() -> dict:
    """Versions of the packages a training step runs through."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory and GPU."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = names[0].strip() if names else cpu
    parts = [f"{cpu}, {os.cpu_count()} cores"]
    try:
        import psutil

        parts.append(f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    except ImportError:
        pass
    gpu = shutil.which("nvidia-smi") and subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    parts.append(f"GPU {gpu}" if gpu else "no GPU")
    return ", ".join(parts)


def kernel_share(method: dict, matmul: float) -> float:
    """How fast the matmul kernels themselves run, as a share of the matmul rate: a steady step's FLOPs (tokens/s x
    step x FLOPs per token) over the matmul group's time in the profiled step. Small shapes (576-wide layers, a few
    hundred rows) keep it low even where nothing else costs anything."""
    flops = method["tokens_per_s"] * method["step_s"] * method["flops_per_token"]
    return flops / method["anatomy"]["matmul"] / matmul if method["anatomy"]["matmul"] else 0.0


def bench_table(bench: dict) -> str:
    """The benchmark as a markdown table, one row per method."""
    rate = bench["matmul_flops_per_s"][bench["matmul_compared_with"]]
    lines = [f"matmul rate: bf16 {bench['matmul_flops_per_s']['bf16'] / 1e9:.0f} GFLOP/s, fp32 "
             f"{bench['matmul_flops_per_s']['fp32'] / 1e9:.0f} GFLOP/s ({bench['threads']} threads); "
             f"profile {bench['profile']!r}, {bench['precision']}, batch {bench['batch_size']}, median of "
             f"{bench['rounds']} interleaved rounds of {bench['steps_per_run']}-step runs",
             "",
             "| method | tokens/s | step | GFLOP/token | share of the matmul rate | peak memory | fixed cost "
             "(prepare + setup + first step + save) | load | one validation pass | generation tokens/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for m in bench["methods"].values():
        f = m["fixed_s"]
        lines.append(
            f"| {m['method']} | {m['tokens_per_s']:.0f} | {m['step_s']:.2f} s | {m['flops_per_token'] / 1e9:.2f} | "
            f"{m['share_of_matmul']:.0%} | {m['peak_memory_bytes'] / 2**20:.0f} MiB | {f['total']:.2f} s "
            f"({f['prepare']:.2f} + {f['setup']:.2f} + {f['first_step_extra']:.2f} + {f['save']:.2f}) | "
            f"{f['load']:.2f} s | {f['evaluation']:.2f} s | {m['generation_tokens_per_s']:.0f} |")
    groups = list(KERNEL_GROUPS) + ["other"]
    lines += ["", "Where one steady step's time goes (torch profiler, self time of the kernels; the rest is Python, "
              "autograd and the Trainer):", "",
              "| method | step (profiled) | " + " | ".join(groups) + " | outside the kernels | the matmul kernels' own "
              "share of the matmul rate |",
              "| --- | ---: | " + " | ".join("---:" for _ in groups) + " | ---: | ---: |"]
    for m in bench["methods"].values():
        a = m["anatomy"]
        lines.append(f"| {m['method']} | {a['step']:.2f} s | " + " | ".join(f"{a[g] / a['step']:.0%}" for g in groups)
                     + f" | {max(a['step'] - a['kernels'], 0) / a['step']:.0%} | {kernel_share(m, rate):.0%} |")
    lines.append(f"\nshare = tokens/s x FLOPs per token / the {bench['matmul_compared_with']} matmul rate "
                 f"({rate / 1e9:.0f} GFLOP/s); FLOPs per token: 6 per trainable and 4 per frozen matmul weight, plus "
                 "attention (ftkit.core.bench).")
    return "\n".join(lines)
