"""Chapter 2 · Hyperparameters: one at a time (sweeps), the explorer widget, gradient noise and accumulation.

Used in notebooks/02_hyperparameters: `s = ftkit.hyperparameters.sweep("learning_rate", [1e-5, 1e-4, 1e-3])`."""

from __future__ import annotations

from .explorer import explore, explore_run, has_widget_frontend
from .measure import (
    accumulation_check,
    answer_batch,
    baseline_loss,
    continue_too_low,
    flat_trainable,
    gradient_noise,
    warm_up,
)
from .sizes import SIZES, Sizes, sizes, with_validation_rows
from .sweeps import SweepResult, rise_share, seeded_sweeps, sweep, sweep_hyperparameters, warmup_range
from .verdicts import (
    alpha_verdicts,
    batch_verdicts,
    diagnose_rates,
    epoch_verdicts,
    highest_stable,
    lr_verdicts,
    minima_verdict,
    rank_verdicts,
    warmup_verdicts,
)

__all__ = [
    "SIZES", "Sizes", "sizes", "with_validation_rows",
    "accumulation_check", "alpha_verdicts", "answer_batch", "baseline_loss", "batch_verdicts", "diagnose_rates",
    "continue_too_low", "epoch_verdicts", "explore", "explore_run", "flat_trainable", "gradient_noise",
    "has_widget_frontend", "highest_stable", "lr_verdicts", "minima_verdict", "rank_verdicts", "rise_share", "seeded_sweeps", "sweep", "sweep_hyperparameters", "SweepResult", "warm_up",
    "warmup_range", "warmup_verdicts"
]
