"""The capstone · QLoRA of a 7B-class model on a free Colab T4: the recipe, a memory plan, Drive checkpoints, a live
loss plot, keeping and sharing the adapter.

Used in colab/capstone_qlora_t4.ipynb and scripts/t4_emulation.py: `hp = ftkit.capstone.capstone_recipe(profile)`."""

from __future__ import annotations

from ftkit.core.runtime import mount_drive  # the capstone keeps its checkpoints on Google Drive

from .colab import (
    T4_GIB,
    LiveLoss,
    checkpoint_dir,
    estimate_peak_bytes,
    max_logit_diff,
    memory_budget,
    merge_adapter,
    plan_memory,
    prompt_logits,
    push_to_hub,
    reload_adapter,
)
from .sizes import FAST_MODEL, capstone_recipe

__all__ = [
    "capstone_recipe", "checkpoint_dir", "estimate_peak_bytes", "FAST_MODEL", "LiveLoss", "max_logit_diff",
    "memory_budget", "merge_adapter", "mount_drive", "plan_memory", "prompt_logits", "push_to_hub", "reload_adapter",
    "T4_GIB"
]
