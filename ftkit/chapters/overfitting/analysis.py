"""Chapter 3's analysis of measured rows: early stopping replayed on a logged curve, per-example losses, and the
scoreboard (summary, ranking, table, plot)."""

from __future__ import annotations

import math
import statistics

from ftkit.chapters.overfitting.rows import Row
from ftkit.core.data import prompt_length
from ftkit.core.models import evaluating, forward_autocast
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


def per_example_losses(model, tokenizer, dataset) -> list[float]:
    """Mean cross-entropy on the answer tokens of each row (as validation loss counts them, one row at a time)."""
    device = next(model.parameters()).device
    losses = []
    with evaluating(model), forward_autocast(model):
        for row in dataset:
            full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
            ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            labels = ids.clone()
            labels[:, :prompt_length(tokenizer, row["messages"])] = -100
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return losses


def _mean(rows: list[Row], value) -> float:
    return statistics.fmean(value(r) for r in rows)


def summary(rows: dict[str, list[Row]]) -> dict[str, dict]:
    """Per remedy, the mean over seeds of each scoreboard column (and the spread of the best and kept validation
    losses between seeds: 0 with one seed)."""
    out = {}
    for name, rs in rows.items():
        vals, bests = [r.kept_val for r in rs], [r.best_val for r in rs]
        out[name] = {"best_val": statistics.fmean(bests), "best_val_spread": max(bests) - min(bests),
                     "kept_val": statistics.fmean(vals),
                     "kept_val_spread": max(vals) - min(vals), "gap": _mean(rs, lambda r: r.gap),
                     "heldout_em": _mean(rs, lambda r: r.heldout["exact_match"]),
                     "steps": _mean(rs, lambda r: r.steps), "seconds": _mean(rs, lambda r: r.wall_time_s),
                     "leaks": _mean(rs, lambda r: len(r.leaks)), "seeds": len(rs)}
    return out


def ranking(rows: dict[str, list[Row]]) -> list[str]:
    """Remedies from the lowest validation loss of the kept model to the highest (mean over seeds)."""
    s = summary(rows)
    return sorted(s, key=lambda name: s[name]["kept_val"])


def scoreboard_table(rows: dict[str, list[Row]]) -> str:
    """The scoreboard as Markdown: one line per remedy, means over seeds (with the spread when there are several)."""
    s = summary(rows)
    head = ("| remedy | strategy | setting | best val loss | val loss, kept model | train/val gap | held-out exact "
            "match | leaked values | steps | seconds |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for name in rows:
        v = s[name]
        spread = f" ± {v['kept_val_spread'] / 2:.3f}" if v["seeds"] > 1 else ""
        lines.append(f"| {name} | {rows[name][0].strategy} | {rows[name][0].setting} | {v['best_val']:.3f} | "
                     f"{v['kept_val']:.3f}{spread} | {v['gap']:.3f} | {v['heldout_em']:.0%} | {v['leaks']:.1f} | "
                     f"{v['steps']:.0f} | {v['seconds']:.0f} |")
    return "\n".join(lines)


def plot_scoreboard(rows: dict[str, list[Row]], ax=None, title: str = "Validation loss of the model each remedy keeps"):
    """Horizontal bars: the kept model's validation loss per remedy (each seed a dot), the baseline's as a line."""
    ax = _axes(ax)
    s = summary(rows)
    names = list(rows)[::-1]
    ax.barh(names, [s[n]["kept_val"] for n in names], color=[f"C{i}" for i in range(len(names))], alpha=0.7)
    for i, n in enumerate(names):
        ax.plot([r.kept_val for r in rows[n]], [i] * len(rows[n]), "k.", ms=4)
    if "baseline" in s:
        ax.axvline(s["baseline"]["kept_val"], color="gray", ls="--", lw=1, label="baseline")
        ax.legend(fontsize=7)
    ax.set(xlabel="validation loss (lower is better)", title=title)
    return ax
