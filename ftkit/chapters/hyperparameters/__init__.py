"""Chapter 2 · Hyperparameters: one at a time (sweeps), the explorer widget, gradient noise and accumulation.

Used in notebooks/02_hyperparameters: `s = ftkit.hyperparameters.sweep("learning_rate", [1e-5, 1e-4, 1e-3])`."""

from __future__ import annotations

from ftkit.core.data import answer_batch  # a course batch with the loss on the answer only (chapter 2's notebooks)

from .explorer import explore, explore_run, has_widget_frontend
from .measure import (
    accumulation_check,
    baseline_loss,
    continue_too_low,
    flat_trainable,
    gradient_noise,
    warm_up,
)
from .sizes import SIZES, Sizes, sizes, with_validation_rows
from .sweeps import (
    SweepResult,
    alpha_tradeoff,
    capacity_runs,
    lr_optima,
    matched_placements,
    placement_runs,
    rise_share,
    seeded_sweeps,
    sweep,
    sweep_hyperparameters,
    training_floor,
    u_minimum,
    warmup_range,
)
from .verdicts import (
    alpha_verdicts,
    batch_verdicts,
    diagnose_rates,
    epoch_verdicts,
    highest_stable,
    lr_ratio_verdict,
    lr_verdicts,
    minima_verdict,
    placement_verdict,
    rank_verdicts,
    warmup_verdicts,
)

__all__ = [
    "accumulation_check", "alpha_tradeoff", "alpha_verdicts", "answer_batch", "baseline_loss", "batch_verdicts",
    "capacity_runs", "continue_too_low", "diagnose_rates", "epoch_verdicts", "explore", "explore_run",
    "flat_trainable", "gradient_noise", "has_widget_frontend", "highest_stable", "lr_optima", "lr_ratio_verdict",
    "lr_verdicts", "matched_placements", "minima_verdict", "placement_runs", "placement_verdict", "rank_verdicts",
    "rise_share", "seeded_sweeps", "SIZES", "sizes", "Sizes", "sweep", "sweep_hyperparameters", "SweepResult",
    "training_floor", "u_minimum", "warm_up", "warmup_range", "warmup_verdicts", "with_validation_rows"
]
