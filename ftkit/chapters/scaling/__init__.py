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
from .verdicts import (
    checkpoint_verdict,
    cluster_verdict,
    loss_match_verdict,
    sharding_holds,
    sharding_verdict,
    sixteen_bytes_verdict,
)

__all__ = [
    "bytes_per_param", "checkpoint_verdict", "cluster_verdict", "loss_gap", "loss_match_verdict", "max_weight_diff",
    "per_process", "run_sharded", "run_sizes", "sharding_holds", "sharding_table", "sharding_verdict",
    "sixteen_bytes_verdict", "smallest_n"
]
