"""Chapter 3's analysis of measured rows: early stopping replayed on a logged curve, each remedy against the baseline
seed by seed, and the scoreboard (summary, ranking, table, plot)."""

from __future__ import annotations

import math
import statistics

from ftkit.chapters.overfitting.rows import Row
from ftkit.core.evidence import Paired, by_seed, relative_change
from ftkit.core.plots import _axes


def early_stop(losses: list[float], patience: int, threshold: float = 0.0) -> tuple[int | None, int]:
    """Where transformers' EarlyStoppingCallback stops on a validation curve: (index of the evaluation after which it
    stops or None if it never does, index of the best evaluation so far then, the one load_best_model_at_end keeps).

    Its rule: an evaluation counts as an improvement only if it is below the best so far by more than `threshold`;
    each evaluation without one adds 1 to a counter (an improvement resets it); training stops when it reaches
    `patience`."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1 evaluation, not {patience}")
    best, best_i, counter = math.inf, 0, 0
    for i, loss in enumerate(losses):
        if loss < best and abs(loss - best) > threshold:
            best, best_i, counter = loss, i, 0
        else:
            counter += 1
            if counter >= patience:
                return i, best_i
    return None, best_i


def callback_stop(losses: list[float], patience: int, threshold: float = 0.0) -> int | None:
    """Where transformers' own EarlyStoppingCallback stops on a logged curve (the index of the evaluation after which
    it stops, None if it never does), driven as the Trainer drives it: on_evaluate with each loss, then the best metric
    updated (Trainer._determine_best_metric). A second route to early_stop's answer, through the library's code."""
    from types import SimpleNamespace

    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    args, state, control = SimpleNamespace(metric_for_best_model="eval_loss", greater_is_better=False), TrainerState(), \
        TrainerControl()
    for i, loss in enumerate(losses):
        callback.on_evaluate(args, state, control, metrics={"eval_loss": loss})
        if control.should_training_stop:
            return i
        if state.best_metric is None or loss < state.best_metric:
            state.best_metric = loss
    return None


def loader_passes(n_rows: int, steps: int, batch_size: int, seed: int = 0) -> float:
    """How many times, on average, a real torch DataLoader (shuffled, keeping the last short batch as the Trainer's
    does) yields each of n_rows training rows over `steps` batches: the epochs a run sees, counted, not computed."""
    import itertools

    import torch

    loader = torch.utils.data.DataLoader(range(n_rows), batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))

    def forever():
        while True:
            yield from loader

    return sum(len(batch) for batch in itertools.islice(forever(), steps)) / n_rows


def against_baseline(name: str, rows: dict[str, list[Row]], value=lambda r: r.test_loss) -> Paired:
    """The remedy's relative change from the baseline, seed by seed (value(remedy) / value(baseline) - 1, same seed:
    same data order and initial adapters), as paired differences for the noise rule."""
    return relative_change(by_seed(rows[name], value), by_seed(rows["baseline"], value))


def summary(rows: dict[str, list[Row]]) -> dict[str, dict]:
    """Per remedy, the mean over seeds of each scoreboard column, and its change from the baseline (paired by seed)."""
    out = {}
    for name, rs in rows.items():
        out[name] = {"test_loss": _mean(rs, lambda r: r.test_loss), "test_em": _mean(rs, lambda r: r.test["exact_match"]),
                     "heldout_em": _mean(rs, lambda r: r.heldout["exact_match"]),
                     "kept_val": _mean(rs, lambda r: r.kept_val),
                     "learned_noise": _mean(rs, lambda r: r.learned_noise),
                     "wrong_labels": _mean(rs, lambda r: len(r.noise_margins["last"])),
                     "kept_step": _mean(rs, lambda r: r.kept_step), "steps": _mean(rs, lambda r: r.steps),
                     "seconds": _mean(rs, lambda r: r.wall_time_s), "seeds": len(rs)}
        if "baseline" in rows:
            out[name]["vs_baseline"] = against_baseline(name, rows)
    return out


def _mean(rows: list[Row], value) -> float:
    return statistics.fmean(value(r) for r in rows)


def ranking(rows: dict[str, list[Row]]) -> list[str]:
    """Remedies from the lowest test loss of the kept model to the highest (mean over seeds)."""
    s = summary(rows)
    return sorted(s, key=lambda name: s[name]["test_loss"])


def scoreboard_table(rows: dict[str, list[Row]]) -> str:
    """The scoreboard as Markdown: one line per remedy, means over seeds; every row judged on its kept model (lowest
    validation loss) on the test split, which that choice never saw; its change from the baseline with the paired noise."""
    s = summary(rows)
    head = ("| remedy | strategy | setting | test loss, kept model | vs baseline (paired by seed) | test exact match | "
            "held-out exact match | wrong labels learned (end of run) | kept step / steps | seconds |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for name in rows:
        v = s[name]
        change = "—" if name == "baseline" else v["vs_baseline"].describe("+.1%")
        lines.append(f"| {name} | {rows[name][0].strategy} | {rows[name][0].setting} | {v['test_loss']:.3f} | {change} | "
                     f"{v['test_em']:.0%} | {v['heldout_em']:.0%} | {v['learned_noise']:.1f} of {v['wrong_labels']:.0f} | "
                     f"{v['kept_step']:.0f} / {v['steps']:.0f} | {v['seconds']:.0f} |")
    return "\n".join(lines)


def plot_scoreboard(rows: dict[str, list[Row]], ax=None, title: str = "Test loss of the model each remedy keeps"):
    """Horizontal bars: the kept model's test loss per remedy (each seed a dot), the baseline's as a line."""
    ax = _axes(ax)
    s = summary(rows)
    names = list(rows)[::-1]
    ax.barh(names, [s[n]["test_loss"] for n in names], color=[f"C{i}" for i in range(len(names))], alpha=0.7)
    for i, n in enumerate(names):
        ax.plot([r.test_loss for r in rows[n]], [i] * len(rows[n]), "k.", ms=4)
    if "baseline" in s:
        ax.axvline(s["baseline"]["test_loss"], color="gray", ls="--", lw=1, label="baseline")
        ax.legend(fontsize=7)
    ax.set(xlabel="test loss (lower is better)", title=title)
    return ax
