"""Chapter 4 · Scaling out: full fine-tuning sharded over processes (FSDP), the ZeRO arithmetic.

Used in notebooks/04_scaling_out: `ftkit.scaling.run_sharded("smollm2-135m", n_processes=2)`."""

from __future__ import annotations

from .sharded import (
    bytes_per_param,
    loss_gap,
    max_weight_diff,
    per_process,
    run_sharded,
    sharding_table,
    smallest_n,
)
from .sizes import run_sizes
from .verdicts import checkpoint_holds, loss_match_holds, sharding_holds, sixteen_bytes_holds

__all__ = ["bytes_per_param", "checkpoint_holds", "loss_gap", "loss_match_holds", "max_weight_diff", "per_process", "run_sharded", "run_sizes", "sharding_holds", "sharding_table", "sixteen_bytes_holds", "smallest_n"]
