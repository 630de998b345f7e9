"""Chapter 3 · Overfitting: the baseline caused on purpose, its remedies, the scoreboard.

Used in notebooks/03_overfitting: `row = ftkit.overfitting.overfit_run("weight decay", profile)`."""

from __future__ import annotations

from .analysis import (
    early_stop,
    per_example_losses,
    plot_scoreboard,
    ranking,
    scoreboard_table,
    summary,
)
from .remedies import REMEDIES, overfit_data, profile_remedies
from .rows import (
    Row,
    adapter_norms,
    find_leaks,
    overfit_rows,
    overfit_run,
    rows_dir,
    share_rows,
    validation_loss,
)
from .sizes import SETUPS, setup_of
from .verdicts import (
    early_stopping_verdict,
    overfitting_verdict,
    penalty_verdict,
    remedy_verdict,
    time_saved,
    why,
)

__all__ = [
    "adapter_norms", "early_stop", "early_stopping_verdict", "find_leaks", "overfit_data",
    "overfit_rows", "overfit_run", "overfitting_verdict", "penalty_verdict", "per_example_losses",
    "plot_scoreboard", "profile_remedies", "ranking", "REMEDIES", "remedy_verdict", "Row", "rows_dir",
    "scoreboard_table", "setup_of", "SETUPS", "share_rows", "summary", "time_saved", "validation_loss", "why"
]
