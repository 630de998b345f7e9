"""Chapter 3's verdicts, from measured numbers, with the three outcomes of the one noise rule (ftkit.core.evidence).

Every row keeps the model of its lowest validation loss and is judged on the test split, which that choice never saw;
a remedy is compared with the baseline seed by seed (same data order, same initial adapters), so its noise is the
paired one. One seed measures no noise: in the `ci` profile the remedies' verdicts are "not settled"."""

from __future__ import annotations

import math
import statistics

from ftkit.chapters.overfitting.analysis import against_baseline, by_seed, summary
from ftkit.chapters.overfitting.remedies import PATIENCE
from ftkit.chapters.overfitting.rows import Row
from ftkit.core.claims import Verdict, verdict
from ftkit.core.evidence import Paired, independent, paired

MIN_GAIN = 0.05  # a remedy helps when the kept model's test loss is at least 5 % below the baseline's (same seed)
SAME_UPDATE = 1e-6  # 3.weight-decay-penalty: decay and a loss penalty give the same update within this (relative)
OTHER_UPDATE = 0.01  # ... and clearly different updates beyond 1 %
LEVEL_MARGIN = 0.05  # why(): a lowest validation loss 5 % above or below the baseline's is "learns less" / "more"
RISE_RATIO = 0.5  # why(): a curve that rises less than half the baseline's rise from its minimum memorises less
INERT_DECAY = 0.05  # weight decay that shrinks an untouched weight by less than 5 % over the run cannot be the cause


def both(*outcomes: bool | None) -> bool | None:
    """A claim of several parts: False when any part is credibly false, True when all are credibly true, else None."""
    return False if False in outcomes else True if all(outcomes) else None


def overfitting_verdict(row: Row) -> Verdict:
    """3.overfitting, on one baseline run: holds when (1) at the last step the loss of the people it trained on (clean
    training rows) is below the loss of new people in the same phrasings (test rows) beyond the noise of the two
    samples, and (2) the test loss rose from the kept step to the last beyond its paired noise (the same rows at two
    checkpoints): training on made it worse on new people. Differs when either is credibly not so (a run whose lowest
    validation loss is at its last step has no rise at all); not settled otherwise."""
    test, train = row.per_row["test"], row.per_row["train"]
    gap = independent(test["last"], train["last"])
    rise = paired(test["last"], test["kept"])
    rose = False if row.kept_step == row.steps else rise.above(0.0)
    holds = both(gap.above(0.0), rose)
    detail = (f"at the last step, loss {statistics.fmean(train['last']):.4f} on the people it trained on against "
              f"{statistics.fmean(test['last']):.3f} on new people in the same phrasings (difference "
              f"{gap.describe('+.3f', over='rows')}); test loss from the kept step {row.kept_step} to the last "
              f"({row.steps}): {statistics.fmean(test['kept']):.3f} -> {statistics.fmean(test['last']):.3f}, "
              f"{rise.describe('+.3f', over='rows')} (paired: the same rows at two checkpoints)")
    if row.kept_step == row.steps:
        detail += " — its lowest validation loss is at the last step: no rise to see"
    return verdict("3.overfitting", holds, detail)


def time_saved(steps: int, planned_steps: int, seconds: float, baseline_seconds: float) -> str:
    """What early stopping saved, in steps and in seconds, said honestly when the seconds went the other way: to
    restore the best model the Trainer writes a checkpoint (adapter and optimizer state) at every evaluation."""
    text = f"stopped at step {steps} of {planned_steps} ({planned_steps - steps} steps saved)"
    if seconds < baseline_seconds:
        return text + f", {seconds:.0f} s against {baseline_seconds:.0f} s for the full run"
    return (text + f", but it took {seconds:.0f} s against the full run's {baseline_seconds:.0f} s: it writes a "
            "checkpoint at every evaluation to restore the best one, which costs more than the steps it saved here")


def early_stopping_verdict(rows: dict[str, list[Row]]) -> Verdict:
    """3.early-stopping: holds when patience stopped every seed's run before its last step, restored the step of the
    lowest validation loss, and that model's test loss is below the full run's final model's, seed by seed, beyond
    the noise (relative). Differs when a run never stopped, restored another step, or the test loss is credibly not
    lower; not settled otherwise (one seed always)."""
    es, base = rows["early stopping"], by_seed(rows["baseline"], lambda r: r)
    change = Paired(tuple(r.test_loss / statistics.fmean(base[r.seed].per_row["test"]["last"]) - 1
                          for r in es if r.seed in base))
    stopped = all(r.steps < r.planned_steps for r in es)
    restored = all(r.restored_step == r.best_step for r in es)
    holds = both(stopped and restored, change.below(0.0))
    first = es[0]
    detail = (f"{time_saved(first.steps, first.planned_steps, first.wall_time_s, base[first.seed].wall_time_s)} "
              f"(seed {first.seed}); restored step {first.restored_step}, the lowest validation loss "
              f"{'in every seed' if restored else 'NOT in every seed'}; test loss of the model it kept against the "
              f"full run's final model: {change.describe('+.1%')}")
    if not stopped:
        detail += " — a run never stopped early"
    return verdict("3.early-stopping", holds, detail)


def optimizer_class(optim: str = "adamw_torch"):
    """The torch optimizer class the Trainer builds for TrainingArguments(optim=...): what the course's runs use."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        return Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=tmp, optim=optim, report_to=[]))[0]


def decay_vs_penalty(optimizer_cls, *, lr: float = 2e-3, weight_decay: float = 0.1, theta: float = 0.5,
                     grad: float = 1.0) -> dict:
    """One step of a torch optimizer on two weights of value theta, one with gradient `grad` and one with none, done
    twice from the same state: with `weight_decay`, and without it but with a penalty lambda/2 |theta|^2 in the loss
    (its gradient lambda*theta added). Returns each way's pull on each weight (how much less it is than after a plain
    step, in units of lr*lambda*theta) and the largest relative difference between the two updates: 0 when the
    optimizer's weight decay is a loss penalty."""
    import torch

    def step(decay: float, extra: float) -> torch.Tensor:
        p = torch.nn.Parameter(torch.full((2,), theta, dtype=torch.float64))
        optimizer = optimizer_cls([p], lr=lr, weight_decay=decay)
        p.grad = torch.tensor([grad, 0.0], dtype=torch.float64) + extra * theta
        optimizer.step()
        return p.detach() - theta

    plain, decayed, penalised = step(0.0, 0.0), step(weight_decay, 0.0), step(0.0, weight_decay)
    unit = lr * weight_decay * theta
    return {"decay_pull": ((plain - decayed) / unit).tolist(), "penalty_pull": ((plain - penalised) / unit).tolist(),
            "difference": float((decayed - penalised).abs().max() / penalised.abs().max())}


def penalty_verdict(measured: dict, optimizer: str) -> Verdict:
    """3.weight-decay-penalty: "adds a penalty to the loss". Holds when the optimizer's weight decay gives the same
    update as a penalty lambda/2 |theta|^2 in the loss (within SAME_UPDATE), differs when the updates differ by more
    than OTHER_UPDATE; `measured` is decay_vs_penalty's. Adam with L2 (torch.optim.Adam's weight_decay) and SGD hold;
    AdamW, decoupled (Loshchilov & Hutter 2019), differs."""
    diff = measured["difference"]
    holds = True if diff <= SAME_UPDATE else False if diff > OTHER_UPDATE else None
    (d_grad, d_none), (p_grad, p_none) = measured["decay_pull"], measured["penalty_pull"]
    detail = (f"{optimizer}, one step: weight decay pulls a weight with a gradient by {d_grad:.2f} and one without by "
              f"{d_none:.2f} (units of lr x lambda x theta); a penalty in the loss pulls them by {p_grad:.2f} and "
              f"{p_none:.2f}; the updates differ by {diff:.1%}")
    if holds is False:
        detail += (". Decoupled: every weight shrinks by the same factor (1 - lr x lambda), applied before the update, "
                   "whatever its gradient; the loss is unchanged; a penalty's gradient, divided by sqrt(v) like every "
                   "gradient, barely moves weights with large gradients")
    return verdict("3.weight-decay-penalty", holds, detail)


def decay_shrink(lrs: list[float], weight_decay: float) -> float:
    """How much decoupled weight decay alone shrinks an untouched weight over a run with these learning rates:
    1 - prod_t (1 - lr_t x lambda) (torch multiplies lambda by the learning rate: a lower rate also weakens decay)."""
    return 1 - math.prod(1 - lr * weight_decay for lr in lrs)


def step_factor(lr: float, weight_decay: float, optimizer_cls=None) -> float:
    """What one real optimizer step (default: torch's AdamW) multiplies a weight by when its gradient is zero: for AdamW
    the decay alone, measured rather than computed."""
    import torch

    weight = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    weight.grad = torch.zeros(1, dtype=torch.float64)
    (optimizer_cls or torch.optim.AdamW)([weight], lr=lr, weight_decay=weight_decay).step()
    return weight.item()


def halving_decay(lrs: list[float]) -> float:
    """The lambda at which decay alone halves an untouched weight over a run with these rates: decay_shrink = 1/2,
    solved by bisection on the exact product (not its e^(-lambda sum lr) approximation)."""
    low, high = 0.0, 1 / max(lrs)  # beyond high, one step would zero the weight
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if decay_shrink(lrs, mid) < 0.5 else (low, mid)
    return low


def inert(row: Row, *, margin: float = INERT_DECAY) -> bool:
    """True for a row that changes only weight decay, when decay alone shrinks a weight by less than `margin` over the
    run: too little to be the cause of any difference from the baseline."""
    if set(row.changes) != {"weight_decay"}:
        return False
    return decay_shrink(row.losses("learning_rate")[1], row.changes["weight_decay"]) < margin


def remedy_verdict(name: str, rows: dict[str, list[Row]], *, min_gain: float = MIN_GAIN) -> Verdict:
    """Does a remedy help against this overfitting? Holds when the kept model's test loss is at least `min_gain` below
    the baseline's (relative, seed by seed) beyond the noise; differs when it is credibly not; not settled otherwise,
    and for a weight decay too weak to move the weights. The detail adds exact match and why()."""
    change = against_baseline(name, rows)
    em = paired(by_seed(rows[name], lambda r: r.test["exact_match"]),
                by_seed(rows["baseline"], lambda r: r.test["exact_match"]))
    s = summary(rows)
    weak = inert(rows[name][0])
    holds = None if weak else change.below(-min_gain)
    detail = (f"{name} ({rows[name][0].setting}): test loss of the kept model {s[name]['test_loss']:.3f} against "
              f"{s['baseline']['test_loss']:.3f}, change {change.describe('+.1%')}; test exact match "
              f"{s[name]['test_em']:.0%} against {s['baseline']['test_em']:.0%} ({em.describe('+.0%')})")
    if weak:
        detail += " — not settled: decay inert at this lambda"
    elif holds is None:
        detail += f" — {change.undecided()}"
    return verdict(rows[name][0].claim, holds, detail + "; " + why(name, rows))


def weight_decay_verdict(rows: dict[str, list[Row]]) -> Verdict:
    """3.weight-decay over the lambdas trained: holds when a lambda strong enough to matter (not inert) helps (as
    remedy_verdict), differs when every such lambda credibly does not, not settled otherwise (and when every lambda
    tried is inert)."""
    names = [n for n in rows if rows[n][0].claim == "3.weight-decay"]
    parts, outcomes = [], []
    for name in names:
        row = rows[name][0]
        shrink = decay_shrink(row.losses("learning_rate")[1], row.changes["weight_decay"])
        if inert(row):
            parts.append(f"lambda {row.changes['weight_decay']:g} shrinks a weight by {shrink:.1%}: inert")
            continue
        change = against_baseline(name, rows)
        outcomes.append(change.below(-MIN_GAIN))
        parts.append(f"lambda {row.changes['weight_decay']:g} shrinks a weight by {shrink:.0%}, test loss "
                     f"{change.describe('+.1%')}")
    holds = True if True in outcomes else False if outcomes and all(o is False for o in outcomes) else None
    return verdict("3.weight-decay", holds, "; ".join(parts) or "no weight decay row trained")


def noise_verdict(name: str, rows: dict[str, list[Row]]) -> Verdict:
    """3.lower-rank, 3.lower-lr: "can prevent it from fitting noise". A known share of the training records carries a
    wrong label; per seed, the mean over them of log p(wrong label) - log p(true label) under the model at the end of
    the run (the same steps as the baseline: the noise fitted in them; the kept checkpoint's depends on where validation
    happened to be lowest). Holds when the baseline learned the wrong labels (its log-odds credibly above 0 over the
    seeds) and the remedy did not (credibly below 0: it still prefers the truth its sentence states); differs when the
    remedy learned them too (credibly above 0); not settled otherwise, and when the baseline itself did not learn them
    (nothing to prevent). The detail gives how much lower the remedy's log-odds are than the baseline's, seed by seed,
    the wrong labels each learned, and the kept model's test loss (does it still learn the task?)."""
    margin = lambda r: statistics.fmean(r.noise_margins["last"])  # noqa: E731
    mine, base = Paired(tuple(map(margin, rows[name]))), Paired(tuple(map(margin, rows["baseline"])))
    holds = mine.below(0.0) if base.above(0.0) else None
    drop = paired(by_seed(rows[name], margin), by_seed(rows["baseline"], margin))
    s = summary(rows)
    detail = (f"{name} ({rows[name][0].setting}): log-odds of the wrong labels against the true ones at the end of the "
              f"run {mine.describe('+.2f', ' nats')}, baseline {base.describe('+.2f', ' nats')}; it learned "
              f"{s[name]['learned_noise']:.1f} of {s[name]['wrong_labels']:.0f} wrong labels (baseline "
              f"{s['baseline']['learned_noise']:.1f}), its log-odds {drop.describe('+.2f', ' nats')} against the "
              f"baseline's; test loss of the kept model {against_baseline(name, rows).describe('+.1%')}")
    if holds is False:
        detail += " — it fits the noise less, but fits it: it does not prevent it"
    elif base.above(0.0) is not True:
        detail += " — the baseline itself did not learn the wrong labels beyond the noise: nothing to prevent"
    elif holds is None:
        detail += f" — {mine.undecided()}"
    return verdict(rows[name][0].claim, holds, detail)


def why(name: str, rows: dict[str, list[Row]], *, margin: float = LEVEL_MARGIN) -> str:
    """Why a remedy ended where it did against the baseline, from the validation curves: how low it got (learns more
    that carries over, or less in these steps) and how far it rose from there (memorises less, or just the same). Weight
    decay too weak to move the weights is named as such."""
    mine, base = rows[name], rows["baseline"]
    best, base_best = statistics.fmean(r.best_val for r in mine), statistics.fmean(r.best_val for r in base)
    rise, base_rise = statistics.fmean(r.rise for r in mine), statistics.fmean(r.rise for r in base)
    if PATIENCE in mine[0].changes:
        return (f"it keeps the model of step {statistics.fmean(r.kept_step for r in mine):.0f}, as every row does; it "
                f"only stops sooner (the full run ends {base_rise:+.0%} above its minimum)")
    if inert(mine[0]):
        shrink = decay_shrink(mine[0].losses("learning_rate")[1], mine[0].changes["weight_decay"])
        return (f"decoupled decay shrinks an untouched weight by only {shrink:.1%} over these {mine[0].planned_steps} "
                "steps, too little to change what the adapter memorises: any difference from the baseline is the "
                "chaotic trajectory of a high rate, not the decay")
    if best > base_best * (1 + margin):
        level = f"its lowest validation loss, {best:.3f}, is above the baseline's {base_best:.3f}: it learns less"
    elif best < base_best * (1 - margin):
        level = (f"it gets lower than the baseline ever did ({best:.3f} against {base_best:.3f}): more of what it learns "
                 "carries over to new people")
    else:
        level = f"it gets about as low as the baseline ({best:.3f} against {base_best:.3f})"
    if rise < RISE_RATIO * base_rise:
        return level + f", and its curve rises {rise:+.0%} from its minimum against the baseline's {base_rise:+.0%}: " \
                       "it memorises less"
    return level + f", and its curve rises {rise:+.0%} from its minimum, like the baseline's {base_rise:+.0%}: it " \
                   "still memorises"


NOISE_CLAIMS = ("3.lower-rank", "3.lower-lr")  # decided on the wrong labels (noise_verdict), the others on test loss


def chapter_verdicts(rows: dict[str, list[Row]]) -> list[Verdict]:
    """Every chapter-3 claim the measured rows can decide, in CLAIMS.md order: overfitting on the baseline's first seed,
    early stopping, weight decay over its sweep, and each other remedy by its own rule."""
    out = [overfitting_verdict(rows["baseline"][0])]
    if "early stopping" in rows:
        out.append(early_stopping_verdict(rows))
    if any(rs[0].claim == "3.weight-decay" for rs in rows.values()):
        out.append(weight_decay_verdict(rows))
    for name, rs in rows.items():
        if rs[0].claim in NOISE_CLAIMS:
            out.append(noise_verdict(name, rows))
        elif rs[0].claim and rs[0].claim not in ("3.early-stopping", "3.weight-decay"):
            out.append(remedy_verdict(name, rows))
    return out
