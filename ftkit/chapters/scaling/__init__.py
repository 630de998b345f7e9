"""Chapter 4 · Scaling out: full fine-tuning sharded over processes (FSDP), the ZeRO arithmetic.

Used in notebooks/04_scaling_out: `ftkit.scaling.run_sharded("smollm2-135m", n_processes=2)`."""

from __future__ import annotations

from .sharded import (
    OFFLOAD,
    bytes_per_param,
    course_rows,
    largest_unit,
    loss_gap,
    max_weight_diff,
    measured,
    per_process,
    run_sharded,
    sharding_table,
    smallest_n,
    step_trace,
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
    "OFFLOAD", "bytes_per_param", "checkpoint_verdict", "cluster_verdict", "course_rows", "largest_unit", "loss_gap",
    "loss_match_verdict", "max_weight_diff", "measured", "per_process", "run_sharded", "run_sizes", "sharding_holds",
    "sharding_table", "sharding_verdict", "sixteen_bytes_verdict", "smallest_n", "step_trace"
]
