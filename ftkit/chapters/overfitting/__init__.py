"""Chapter 3 · Overfitting: the baseline caused on purpose, its remedies, the scoreboard.

Used in notebooks/03_overfitting: `row = ftkit.overfitting.overfit_run("weight decay 10", profile)`."""

from __future__ import annotations

from .analysis import (
    against_baseline,
    by_seed,
    callback_stop,
    early_stop,
    loader_passes,
    plot_scoreboard,
    ranking,
    scoreboard_table,
    summary,
)
from .remedies import REMEDIES, overfit_data, profile_remedies
from .rows import (
    KeepCheckpoints,
    Row,
    adapter_norms,
    find_leaks,
    loaded,
    overfit_rows,
    overfit_run,
    rows_dir,
    share_rows,
    validation_loss,
)
from .sizes import SETUPS, setup_of
from .verdicts import (
    chapter_verdicts,
    decay_shrink,
    decay_vs_penalty,
    early_stopping_verdict,
    halving_decay,
    inert,
    noise_verdict,
    optimizer_class,
    overfitting_verdict,
    penalty_verdict,
    remedy_verdict,
    step_factor,
    time_saved,
    weight_decay_verdict,
    why,
)

__all__ = [
    "adapter_norms", "against_baseline", "by_seed", "callback_stop", "chapter_verdicts", "decay_shrink", "decay_vs_penalty", "early_stop",
    "early_stopping_verdict", "find_leaks", "halving_decay", "inert", "KeepCheckpoints", "loaded", "loader_passes", "noise_verdict", "optimizer_class",
    "overfit_data", "overfit_rows", "overfit_run", "overfitting_verdict", "penalty_verdict", "plot_scoreboard",
    "profile_remedies", "ranking", "REMEDIES", "remedy_verdict", "Row", "rows_dir", "scoreboard_table", "setup_of",
    "SETUPS", "share_rows", "step_factor", "summary", "time_saved", "validation_loss", "weight_decay_verdict", "why"
]
