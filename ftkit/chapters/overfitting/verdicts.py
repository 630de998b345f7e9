"""Chapter 3's verdicts: overfitting seen, early stopping, the weight-decay penalty, and each remedy against the
baseline beyond the seeds' spread, from measured numbers."""

from __future__ import annotations

import math
import statistics

from ftkit.chapters.overfitting.analysis import summary
from ftkit.chapters.overfitting.remedies import PATIENCE
from ftkit.chapters.overfitting.rows import Row
from ftkit.core.claims import Verdict, verdict

MIN_RISE = 0.1  # 3.overfitting: validation loss must end at least 10 % above its minimum to call it overfitting
SAME_MODEL = 1e-3  # 3.early-stopping: the kept model's validation loss equals the best logged one within 0.1 %
PENALTY_SHARE = 0.5  # 3.weight-decay-penalty: a penalty in the loss shows as at least half of lambda/2 |theta|^2
MIN_GAIN = 0.05  # a remedy helps when the kept model's validation loss is at least 5 % lower than the baseline's
LEVEL_MARGIN = 0.05  # why(): a lowest validation loss 5 % above or below the baseline's is "learns less" / "more"
RISE_RATIO = 0.5  # why(): a curve that rises less than half the baseline's rise from its minimum memorises less
INERT_DECAY = 0.05  # weight decay that shrinks an untouched weight by less than 5 % over the run cannot be the cause


def overfitting_verdict(best_val: float, last_val: float, last_train: float, train_em: float, heldout_em: float,
                        *, min_rise: float = MIN_RISE) -> Verdict:
    """3.overfitting: holds when training loss ends below the best validation loss, validation loss ends at least
    `min_rise` above its minimum, and the model scores better on its training sentences than on new ones."""
    rise = last_val / best_val - 1
    holds = last_train < best_val and rise >= min_rise and train_em > heldout_em
    detail = (f"training loss ended at {last_train:.4f} while validation loss rose from its minimum {best_val:.3f} "
              f"to {last_val:.3f} ({rise:+.0%}); exact match {train_em:.0%} on the training sentences, "
              f"{heldout_em:.0%} on new people in new phrasings")
    if not holds:
        detail += (f" — not the memorisation picture (it needs a rise of at least {min_rise:.0%} and a better score "
                   "on the training sentences)")
    return verdict("3.overfitting", holds, detail)


def early_stopping_verdict(stopped_step: int, planned_steps: int, restored_val: float, best_logged: float,
                           baseline_val: float, seconds: float, baseline_seconds: float,
                           *, rel: float = SAME_MODEL) -> Verdict:
    """3.early-stopping: holds when the run stopped before its last step, the model kept has the best logged
    validation loss (within `rel`), and that is lower than where the full run ended."""
    restored = math.isclose(restored_val, best_logged, rel_tol=rel)
    holds = stopped_step < planned_steps and restored and restored_val < baseline_val
    detail = (f"{time_saved(stopped_step, planned_steps, seconds, baseline_seconds)}; the model in memory has "
              f"validation loss {restored_val:.4f}, "
              f"the best logged was {best_logged:.4f} ({'the same model' if restored else 'NOT the best one'}), "
              f"against {baseline_val:.4f} at the end of the full run")
    return verdict("3.early-stopping", holds, detail)


def time_saved(steps: int, planned_steps: int, seconds: float, baseline_seconds: float) -> str:
    """What early stopping saved, in steps and in seconds, said honestly when the seconds went the other way: to
    restore the best model the Trainer writes a checkpoint (adapter and optimizer state) at every evaluation."""
    text = f"stopped at step {steps} of {planned_steps} ({planned_steps - steps} steps saved)"
    if seconds < baseline_seconds:
        return text + f", {seconds:.0f} s against {baseline_seconds:.0f} s for the full run"
    return (text + f", but it took {seconds:.0f} s against the full run's {baseline_seconds:.0f} s: it writes a "
            "checkpoint at every evaluation to restore the best one, which costs more than the steps it saved here")


def penalty_verdict(first_loss_decay: float, first_loss_plain: float, penalty: float) -> Verdict:
    """3.weight-decay-penalty: "adds a penalty to the loss". Before the first update, with the same seed and batch,
    a penalty would make the logged loss larger by `penalty` (lambda/2 |theta|^2). Holds when it is larger by at
    least half of that; AdamW's decoupled decay leaves the loss unchanged."""
    diff = first_loss_decay - first_loss_plain
    holds = diff >= PENALTY_SHARE * penalty
    detail = (f"first logged training loss with decay {first_loss_decay:.6f}, without {first_loss_plain:.6f} "
              f"(difference {diff:+.2g}); an L2 penalty on these weights would have added {penalty:.3g}")
    if not holds:
        detail += (". AdamW's decay is decoupled from the loss (Loshchilov & Hutter 2019): each step multiplies the "
                   "weights by (1 - lr x lambda) after the Adam update; on LoRA that shrinks A and B, pulling the "
                   "model towards the base model, not the weights towards zero")
    return verdict("3.weight-decay-penalty", holds, detail)


def decay_shrink(row: Row, weight_decay: float) -> float:
    """How much decoupled weight decay alone shrinks an untouched weight over a run: 1 - prod_t (1 - lr_t x lambda)."""
    return 1 - math.prod(1 - lr * weight_decay for lr in row.losses("learning_rate")[1])


def why(name: str, rows: dict[str, list[Row]], *, margin: float = LEVEL_MARGIN) -> str:
    """Why a remedy ended where it did against the baseline, from the two curves: how low it got (learns more that
    carries over, or less in these steps) and how far it rose from there (memorises less, or just the same). Weight
    decay too weak to move the weights is named as such: its difference from the baseline is then the run's noise."""
    s = summary(rows)
    base, mine = s["baseline"], rows[name]
    best, rise = s[name]["best_val"], statistics.fmean(r.rise for r in mine)
    base_rise = statistics.fmean(r.rise for r in rows["baseline"])
    if PATIENCE in mine[0].changes:
        return (f"it keeps the model of step {statistics.fmean(r.kept_step for r in mine):.0f}, before the curve rose "
                f"(the full run ends {base_rise:+.0%} above its minimum)")
    if too_weak_decay(name, rows, margin=margin):
        decay = mine[0].changes["weight_decay"]
        return (f"decoupled decay shrinks an untouched weight by only {decay_shrink(mine[0], decay):.1%} over these "
                f"{mine[0].planned_steps} steps, too little to change what the adapter memorises: the difference from "
                "the baseline is noise (the same seed, a slightly different and chaotic trajectory at this high rate)")
    spread = max(s[name]["best_val_spread"], base["best_val_spread"])
    if 0 < spread and abs(base["best_val"] - best) <= spread:
        level = (f"its lowest validation loss, {best:.3f}, is within the seeds' spread ({spread:.3f}) of the "
                 f"baseline's {base['best_val']:.3f}")
    elif best > base["best_val"] * (1 + margin):
        level = (f"its lowest validation loss, {best:.3f}, is above the baseline's {base['best_val']:.3f}: in "
                 f"{mine[0].planned_steps} steps it learns less")
    elif best < base["best_val"] * (1 - margin):
        level = (f"it gets lower than the baseline ever did ({best:.3f} against {base['best_val']:.3f}): more of what "
                 "it learns carries over to new people")
    else:
        level = f"it gets about as low as the baseline ({best:.3f} against {base['best_val']:.3f})"
    if rise < RISE_RATIO * base_rise:
        return level + f", and its curve rises {rise:+.0%} from its minimum against the baseline's {base_rise:+.0%}: " \
                       "it memorises less"
    return level + f", and its curve rises {rise:+.0%} from its minimum, like the baseline's {base_rise:+.0%}: it " \
                   "still memorises"


def too_weak_decay(name: str, rows: dict[str, list[Row]], *, margin: float = INERT_DECAY) -> bool:
    """True for a remedy that changes only weight decay, when decay alone shrinks a weight by less than `margin` over
    the run: too little to be the cause of any difference from the baseline."""
    row = rows[name][0]
    if set(row.changes) != {"weight_decay"}:
        return False
    return decay_shrink(row, row.changes["weight_decay"]) < margin


def remedy_verdict(name: str, rows: dict[str, list[Row]], *, min_gain: float = MIN_GAIN) -> Verdict:
    """Does a remedy help here? Holds when the validation loss of the model it keeps is at least `min_gain` (5 %)
    below the baseline's, by more than the spread between seeds (when there are several), and the remedy can be the
    cause (weight decay too weak to move the weights cannot). The detail adds held-out exact match and why()."""
    s = summary(rows)
    base, row = s["baseline"], s[name]
    change = row["kept_val"] / base["kept_val"] - 1
    noise = max(base["kept_val_spread"], row["kept_val_spread"])
    beyond_noise = base["kept_val"] - row["kept_val"] > noise
    weak = too_weak_decay(name, rows)
    holds = change <= -min_gain and beyond_noise and not weak
    detail = (f"{name} ({rows[name][0].setting}): validation loss of the kept model {row['kept_val']:.3f} against "
              f"{base['kept_val']:.3f} ({change:+.0%}), held-out exact match {row['heldout_em']:.0%} against "
              f"{base['heldout_em']:.0%}")
    if change > -min_gain:
        detail += f" — not {min_gain:.0%} better, so it does not help here"
    elif weak:
        detail += " — but not because of the decay"
    elif not beyond_noise:
        detail += f" — within the spread between seeds ({noise:.3f}), so not a measured help"
    return verdict(rows[name][0].claim, holds, detail + "; " + why(name, rows))
