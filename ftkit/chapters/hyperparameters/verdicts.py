"""Chapter 2's verdicts: each claim of theory.md section 2 decided from measured numbers (plain numbers in, so a unit
test can flip each one), with every threshold a named constant beside its rule.
"""

from __future__ import annotations

import math
import statistics

from ftkit.chapters.hyperparameters.sweeps import rise_share
from ftkit.core.claims import Verdict, verdict
from ftkit.core.evidence import mean_of, paired
from ftkit.core.memory import human_bytes

TOO_LOW_FRACTION = 0.25  # a rate is "too low" when its loss moved less than this share of what the best rate moved
RISE_SHARE = 0.5  # ... "too high" when the loss rose on more than this share of its steps (oscillation) ...
SWING = 0.5  # ... and swung above its first value by more than this fraction (batch-to-batch noise does not)
ABOVE_START = 1.05  # ... or ended above the untrained model's validation loss by more than 5 % (noise and bf16)
HALVED = 0.5  # 2.batch-stable: the largest batch's gradient variance under half the smallest's (noise rule)
TYPICAL_EPOCHS = (1, 3)  # 2.epochs-typical: the theory's "1-3 epochs" for SFT
REALISTIC_TRAIN = 1000  # ... which is about training sets of thousands of examples: fewer cannot test it
ONE_SIZE = "only one {what} measured: a claim about a larger one needs two at least"  # not settled, whatever it says
NO_VERTEX = ("the lowest loss sits at an end of the rates tried, or the bottom is flat, so there is no optimum to read "
             "(widen the grid, or train fewer steps so that the best rate stays above the loss floor)")  # not settled


def oscillates(curve: list[float]) -> bool:
    """The training loss rose on more than RISE_SHARE of its steps and swung SWING above its first value."""
    return rise_share(curve) > RISE_SHARE and max(curve) > (1 + SWING) * curve[0]


def diagnose_rates(start: float, finals: dict, train_losses: dict) -> dict:
    """{rate: "too high" | "too low" | "best" | "ok"} from the untrained model's validation loss, each rate's final
    validation loss and its training-loss curve. Too high: NaN, final above ABOVE_START x start, or oscillating.
    Too low: moved less than TOO_LOW_FRACTION of what the best rate moved."""
    why = {}
    for rate in finals:
        curve = train_losses[rate]
        if not math.isfinite(finals[rate]) or not all(math.isfinite(x) for x in curve):
            why[rate] = "too high"
        elif finals[rate] > ABOVE_START * start or oscillates(curve):
            why[rate] = "too high"
    fine = {r: f for r, f in finals.items() if r not in why}
    if not fine:
        return why
    best = min(fine, key=fine.get)
    for rate, f in fine.items():
        why[rate] = "best" if rate == best else (
            "too low" if start - f < TOO_LOW_FRACTION * (start - fine[best]) else "ok")
    return dict(sorted(why.items()))


def lr_verdicts(start: dict, finals: dict, train_losses: dict) -> dict[str, Verdict]:
    """The sweep's two failure verdicts (2.lr-too-high, 2.lr-too-low). Each argument is {method: ...}: start loss,
    {rate: final validation loss}, {rate: training losses}. 2.lr-local-minima is minima_verdict's, 2.lr-lora-higher
    lr_ratio_verdict's."""
    diag = {m: diagnose_rates(start[m], finals[m], train_losses[m]) for m in finals}
    out = {}
    high = {m: [r for r, d in diag[m].items() if d == "too high"] for m in diag}
    out["2.lr-too-high"] = verdict(
        "2.lr-too-high", all(high.values()),
        "; ".join(f"{m}: " + (", ".join(f"{r:g} ({_high_sign(start[m], finals[m][r], train_losses[m][r])})"
                                         for r in high[m]) or f"no rate up to {max(finals[m]):g} diverged")
                  for m in diag))
    low = {m: [r for r, d in diag[m].items() if d == "too low"] for m in diag}
    out["2.lr-too-low"] = verdict(
        "2.lr-too-low", all(low.values()),
        "; ".join(f"{m}: " + (", ".join(f"{r:g} moved the loss {start[m] - finals[m][r]:.3f}" for r in low[m])
                              + f" against {start[m] - min(finals[m][r] for r, d in diag[m].items() if d == 'best'):.3f}"
                              f" at the best rate" if low[m] else f"even {min(finals[m]):g} moved the loss well")
                  for m in diag))
    return out


def _unbracketed(optima: dict) -> str:
    """Which fitted optima (lr_optima's {label: {seed: rate}}) are missing: "lora on seed 0; full (no run)", or ""."""
    return "; ".join(f"{label} on seed {', '.join(str(s) for s, v in o.items() if not math.isfinite(v))}" if o else
                     f"{label} (no run)" for label, o in optima.items()
                     if not o or not all(math.isfinite(v) for v in o.values()))


def _decades(a: dict, b: dict):
    """How many decades rate a lies above rate b, per seed: paired log10(a / b) for the noise rule."""
    return paired({s: math.log10(v) for s, v in a.items()}, {s: math.log10(v) for s, v in b.items()})


def _geometric_mean(rates) -> float:
    """The centre of rates spread over decades (their geometric mean)."""
    return 10 ** statistics.fmean(math.log10(v) for v in rates)


def lr_ratio_verdict(optima: dict[str, dict[int, float]], lora_scale: str) -> Verdict:
    """2.lr-lora-higher by the noise rule on how many decades LoRA's optimum rate lies above full FT's, paired by seed:
    optima {method: {seed: fitted optimum rate (lr_optima), nan where the U-curve has no bracketed minimum}}. Holds
    when LoRA's is higher beyond the noise, differs when it is credibly lower, else not settled. lora_scale: LoRA's
    r and alpha, which the ratio depends on (under Adam alpha/r multiplies the adapter's step)."""
    unbracketed = _unbracketed(optima)
    if unbracketed:
        return verdict("2.lr-lora-higher", None, f"no minimum bracketed for {unbracketed}: {NO_VERTEX}")
    decades = _decades(optima["lora"], optima["full"])
    centre = {m: _geometric_mean(o.values()) for m, o in optima.items()}
    higher = decades.above(0.0)
    detail = (f"fitted optimum (vertex of the U-curve in log-rate) LoRA {centre['lora']:.2g}, full FT "
              f"{centre['full']:.2g}: LoRA's is {10 ** decades.mean:.3g}x full FT's, "
              f"{decades.describe('+.2f', ' decades')}; the text's 2e-4 vs 1e-5 is 20x, LoRA Without Regret's ~10x "
              f"is at a fixed alpha of 32; LoRA here: {lora_scale}")
    detail += _reading(higher, decades, "LoRA's optimum is higher", "LoRA's optimum is lower than full FT's")
    return verdict("2.lr-lora-higher", higher, detail)


def minima_verdict(method: str, low: float, best: float, continued: dict) -> Verdict:
    """2.lr-local-minima by the noise rule: continue_too_low's {seed: {"low", "continued", "grad_start", "grad_end"}}.
    Differs when continuing from where the too-low rate stopped, at the best rate, lowers the validation loss beyond
    the noise (the run stopped on a slope or a plateau: there was more to gain right there); agrees when it cannot
    (it raises the loss beyond the noise: nothing lower nearby, as in a minimum); not settled otherwise."""
    if not continued:
        return verdict("2.lr-local-minima", None, "no too-low run was continued: nothing to decide")
    seeds = sorted(continued)
    fell = paired({s: continued[s]["low"] for s in seeds}, {s: continued[s]["continued"] for s in seeds})
    gain = fell.above(0.0)
    grad = sum(continued[s]["grad_end"] / continued[s]["grad_start"] for s in seeds) / len(seeds)
    detail = (f"{method} at the too-low rate {low:g} stopped at validation loss "
              f"{sum(continued[s]['low'] for s in seeds) / len(seeds):.3f} with its gradient norm at {grad:.0%} of "
              f"its start; from there, the same steps at the best rate {best:g} brought it to "
              f"{sum(continued[s]['continued'] for s in seeds) / len(seeds):.3f} (lower by {fell.describe('+.3f')})")
    detail += _reading(gain, fell, "the run had stopped on a slope or a plateau, not in a minimum; the text's "
                                   "'stuck in local minima' is loose: too low is slow, not trapped",
                       "a larger step from there made things worse, as near a minimum")
    return verdict("2.lr-local-minima", None if gain is None else not gain, detail)


def _high_sign(start: float, final: float, curve: list[float]) -> str:
    if not math.isfinite(final) or not all(math.isfinite(x) for x in curve):
        return "NaN"
    if final > ABOVE_START * start:
        return f"ended at {final:.3g}, above the untrained {start:.3g}"
    return f"loss rose on {rise_share(curve):.0%} of steps, up to {max(curve):.3g}"


def batch_verdicts(noise: dict, memory: dict, accumulation: dict) -> dict[str, Verdict]:
    """noise: gradient_noise's {b: {"samples", "variance", "noise_scale", ...}}; memory {b: bytes of one step};
    accumulation {"loss_diff", "weight_diff", "tolerance", "memory_small", "memory_big"}: relative differences of
    batch 8 vs 4 x 2 and their memories. 2.batch-stable by the noise rule on the per-batch variance samples of the
    smallest and the largest batch size, paired by their order (independent batches: the pairing is only bookkeeping)."""
    sizes = sorted(noise)
    if len(sizes) < 2:
        return {claim: verdict(claim, None, ONE_SIZE.format(what="batch size")) for claim in
                ("2.batch-stable", "2.batch-vram")} | _accumulation(accumulation)
    small, big = noise[sizes[0]], noise[sizes[-1]]
    calmer = paired([HALVED * u for u in small["samples"]], big["samples"])  # > 0: the big batch's variance is lower
    holds = calmer.above(0.0)
    var = {b: noise[b]["variance"] for b in sizes}
    slope = (math.log(var[sizes[-1]]) - math.log(var[sizes[0]])) / (math.log(sizes[-1]) - math.log(sizes[0])) \
        if var[sizes[0]] > 0 and var[sizes[-1]] > 0 else math.nan
    scale = small.get("noise_scale", math.nan)
    detail = (f"variance of the batch gradient {var[sizes[0]]:.3g} at batch {sizes[0]} -> {var[sizes[-1]]:.3g} at batch "
              f"{sizes[-1]} (unbiased, {small['batches']} batches each): it falls as b^{slope:.2f} (independent "
              f"examples give b^-1); half the small batch's minus the large one's: {calmer.describe('+.3g', over='batches')}")
    if holds is None:
        detail += f"; {calmer.undecided('batches')}"
    if math.isfinite(scale):
        detail += (f". Gradient noise scale tr(Σ)/|G|² ≈ {scale:.3g}: batches much smaller than that are mostly noise, "
                   f"much larger ones add little signal per example")
    out = {"2.batch-stable": verdict("2.batch-stable", holds, detail)}
    bs = sorted(memory)
    if len(bs) < 2:
        return out | {"2.batch-vram": verdict("2.batch-vram", None, ONE_SIZE.format(what="batch size"))} \
            | _accumulation(accumulation)
    grows = all(memory[a] < memory[b] for a, b in zip(bs, bs[1:]))
    out["2.batch-vram"] = verdict(
        "2.batch-vram", grows, f"one step needs {_mb(memory[bs[0]])} at batch {bs[0]} and {_mb(memory[bs[-1]])} at "
        f"batch {bs[-1]}: +{_mb((memory[bs[-1]] - memory[bs[0]]) / (bs[-1] - bs[0]))} per example (activations)")
    return out | _accumulation(accumulation)


def _accumulation(a: dict) -> dict[str, Verdict]:
    same = a["loss_diff"] <= a["tolerance"] and a["weight_diff"] <= a["tolerance"]
    return {"2.batch-accumulation": verdict(
        "2.batch-accumulation", same and a["memory_small"] < a["memory_big"],
        f"batch 8 vs 4 x 2 accumulation: losses differ by {a['loss_diff']:.2%}, trained weights by "
        f"{a['weight_diff']:.2%} of the update (tolerance {a['tolerance']:.0%}); memory of a step "
        f"{_mb(a['memory_small'])} vs {_mb(a['memory_big'])}")}


def _reading(outcome: bool | None, p, if_true: str, if_false: str) -> str:
    """The clause a noise-rule verdict ends with: what an outcome means, or why it is not settled."""
    return ": " + (if_true if outcome else if_false if outcome is False else p.undecided())


def _mb(n: float) -> str:

    return human_bytes(n)


def rank_verdicts(params: dict, formula: dict, memory: dict, floors: dict) -> dict[str, Verdict]:
    """params/formula/memory: {r: number}; floors: {seed: {r: training-loss floor}} of runs at a fixed alpha, long
    enough to fit a small training set (capacity_runs). 2.rank-capacity by the noise rule: the smallest rank's floor
    above the largest's. 2.rank-all-linear is placement_verdict's."""
    rs = sorted(params)
    fs = sorted(next(iter(floors.values()), {}))
    if len(rs) < 2 or len(memory) < 2 or len(fs) < 2:  # a claim about "higher r" needs two ranks at least
        return {claim: verdict(claim, None, ONE_SIZE.format(what="rank")) for claim in
                ("2.rank-params", "2.rank-vram", "2.rank-capacity")}
    exact = all(params[r] == formula[r] for r in rs)
    out = {"2.rank-params": verdict(
        "2.rank-params", exact and all(params[a] < params[b] for a, b in zip(rs, rs[1:])),
        ", ".join(f"r={r}: {params[r]:,}" for r in rs) + (" trainable, equal to r(d_in + d_out) summed over the "
                                                          "adapted layers" if exact else " (formula differs!)"))}
    ms = sorted(memory)
    out["2.rank-vram"] = verdict(
        "2.rank-vram", memory[ms[-1]] > memory[ms[0]],
        f"one step needs {_mb(memory[ms[0]])} at r={ms[0]} and {_mb(memory[ms[-1]])} at r={ms[-1]}: "
        f"{(memory[ms[-1]] - memory[ms[0]]) / memory[ms[0]]:+.1%} (the frozen base dominates)")
    seeds = sorted(floors)
    lower = paired({s: floors[s][fs[0]] for s in seeds}, {s: floors[s][fs[-1]] for s in seeds})
    capacity = lower.above(0.0)
    mean = {r: sum(floors[s][r] for s in seeds) / len(seeds) for r in fs}
    detail = (f"training-loss floor at a fixed alpha ({mean_of(len(seeds))}): "
              + ", ".join(f"r={r}: {mean[r]:.4f}" for r in fs)
              + f"; r={fs[0]} above r={fs[-1]} by {lower.describe('+.4f')}")
    detail += _reading(capacity, lower,
                       "the larger rank fits the training set closer, more capacity (overfitting: chapter 3)",
                       "the larger rank fits the training set less closely here")
    out["2.rank-capacity"] = verdict("2.rank-capacity", capacity, detail)
    return out


def placement_verdict(placements: dict) -> Verdict:
    """2.rank-all-linear by the noise rule: placement_runs' {name: {"rank", "rate", "params", "losses": {seed: final
    validation loss}}} for "all-linear", "attention" and "MLP" at matched parameters, each at its best rate. Holds
    when all-linear and MLP-only both end below attention-only beyond the noise (paired by seed), differs when either
    ends credibly above it, else not settled."""
    attention = placements["attention"]["losses"]
    gains = {name: paired(attention, placements[name]["losses"]) for name in ("all-linear", "MLP")}
    outcomes = {name: g.above(0.0) for name, g in gains.items()}
    holds = False if False in outcomes.values() else True if all(outcomes.values()) else None
    detail = ("at matched parameters, each at its best rate: " + "; ".join(
        f"{name} r={p['rank']} ({p['params']:,} trainable) at lr {p['rate']:g}: "
        f"{statistics.fmean(p['losses'].values()):.3f}" for name, p in placements.items())
        + f" ({mean_of(len(attention))}); attention-only minus all-linear {gains['all-linear'].describe('+.3f')}, "
          f"minus MLP-only {gains['MLP'].describe('+.3f')}")
    edge = [name for name, p in placements.items()
            if len(p.get("grid", ())) > 1 and p["rate"] in (min(p["grid"]), max(p["grid"]))]
    if edge:
        detail += f" ({', '.join(edge)}: the best rate is at an end of the rates tried, so its optimum may lie beyond)"
    if holds is None:
        return verdict("2.rank-all-linear", None, detail + ": " + next(
            gains[name].undecided() for name, o in outcomes.items() if o is None))
    worse = [name for name, o in outcomes.items() if o is False]
    return verdict("2.rank-all-linear", holds, detail + (
        ": adapting the MLP matters more than the same parameters in attention" if holds else
        f": {' and '.join(worse)} ended above attention-only here"))


def alpha_verdicts(optima: dict, tradeoff: dict) -> dict[str, Verdict]:
    """optima: {r: {seed: optimum learning rate at alpha = 2r}} (lr_optima at the smallest and the largest rank).
    tradeoff: alpha_tradeoff's {arm: {seed: final validation loss}}, arms "alpha, lr", "alpha/2, lr", "alpha/2, 2lr".

    2.alpha-influence by the noise rule: per seed, how far halving alpha moves the loss, minus how far it still is when
    the rate doubles too. Above 0 beyond the noise: alpha scales the adapter's update, and the rate can make up for it
    (under Adam alpha acts as a rate multiplier); below 0: doubling the rate does not make up for half the alpha.

    2.alpha-rule by the noise rule on how far the best rate at alpha = 2r moves (in decades, per seed) as r grows.
    With alpha/r a rate multiplier, a scheme of scale c(r) has its best rate at the alpha = 2r one times 2 / c(r): a
    fixed alpha moves it log10(r1/r0) decades further up than alpha = 2r does, rsLoRA half that. alpha = 2r (and
    alpha = r, a constant factor away) keeps the best rate closest to put when its own move is above -log10(r1/r0)/4
    (the midpoint towards rsLoRA's): holds when it is beyond the noise, differs when credibly below, else not
    settled."""
    base = tradeoff["alpha, lr"]
    seeds = sorted(base)
    gap = {arm: {s: abs(tradeoff[arm][s] - base[s]) for s in seeds} for arm in ("alpha/2, lr", "alpha/2, 2lr")}
    made_up = paired(gap["alpha/2, lr"], gap["alpha/2, 2lr"])
    influence = made_up.above(0.0)
    mean = {arm: sum(v[s] for s in seeds) / len(seeds) for arm, v in tradeoff.items()}
    detail = (f"validation loss ({mean_of(len(seeds))}): " + ", ".join(f"{a} {v:.3f}" for a, v in mean.items())
              + f"; halving alpha moved it by {sum(gap['alpha/2, lr'].values()) / len(seeds):.3f}, halving alpha and "
              f"doubling the rate by {sum(gap['alpha/2, 2lr'].values()) / len(seeds):.3f} (difference "
              f"{made_up.describe('+.3f')})")
    detail += _reading(influence, made_up,
                       "alpha sets how far the adapter moves the model, and under Adam it trades one for one with the "
                       "learning rate (Adam's steps on A and B do not depend on alpha; their effect is scaled by alpha/r)",
                       "doubling the rate does not make up for half the alpha here")
    out = {"2.alpha-influence": verdict("2.alpha-influence", influence, detail)}
    rs = sorted(optima)
    if len(rs) < 2:  # one rank: nothing moves
        return out | {"2.alpha-rule": verdict("2.alpha-rule", None, ONE_SIZE.format(what="rank"))}
    r0, r1 = rs[0], rs[-1]
    unbracketed = _unbracketed({f"r={r}": optima[r] for r in (r0, r1)})
    if unbracketed:
        return out | {"2.alpha-rule": verdict("2.alpha-rule", None, (
            f"no minimum bracketed at alpha = 2r for {unbracketed}: {NO_VERTEX}"))}
    moved = _decades(optima[r1], optima[r0])
    span = math.log10(r1 / r0)
    schemes = {"alpha = 2r (or alpha = r)": moved.mean, "rsLoRA": moved.mean + span / 2, "fixed alpha": moved.mean + span}
    still = min(schemes, key=lambda k: abs(schemes[k]))
    centre = {r: _geometric_mean(optima[r].values()) for r in (r0, r1)}
    stays = moved.above(-span / 4)
    detail = (f"best rate at alpha = 2r: r={r0} {centre[r0]:.2g}, r={r1} {centre[r1]:.2g}, a move of "
              f"{moved.describe('+.2f', ' decades')} as r grew {r1 / r0:g}x; with alpha/r a rate multiplier (under Adam, "
              f"2.alpha-influence) a fixed alpha would have moved it {schemes['fixed alpha']:+.2f} and rsLoRA "
              f"{schemes['rsLoRA']:+.2f}: the scheme whose best rate stays put is {still}")
    detail += _reading(stays, moved, "keeping alpha/r the same at every rank keeps the best rate put",
                       "alpha/r kept the same does not keep the best rate put: Adam's steps on A and B are the same size "
                       "whatever r, so the update B A grows with r unless alpha/r shrinks (LoRA Without Regret keeps "
                       "alpha fixed)")
    out["2.alpha-rule"] = verdict("2.alpha-rule", stays, detail)
    return out


def epoch_verdicts(val_by_epochs: dict, n_train: int) -> dict[str, Verdict]:
    """2.epochs-fit and 2.epochs-typical by the noise rule. val_by_epochs: {seed: {num_epochs: final validation loss}},
    each a separate run with its own schedule (not checkpoints of one run); n_train: the training examples.

    The best count k* has the lowest mean. Fit: underfitting below k* (the smallest count ends higher than k*, beyond
    the noise) and overfitting above it (the largest count ends higher than k*); where k* is the smallest or the largest
    count, that side is missing if its neighbour is credibly worse (else not settled). Typical ("1-3 epochs for SFT"):
    about training sets of thousands of examples; below REALISTIC_TRAIN examples not settled, whatever k*."""
    seeds = sorted(val_by_epochs)
    ks = sorted(next(iter(val_by_epochs.values())))
    if len(ks) < 3:  # a minimum between the first and the last count needs three at least
        return {claim: verdict(claim, None, f"only {len(ks)} epoch count(s) measured: a rise after a minimum needs "
                                            f"three") for claim in ("2.epochs-fit", "2.epochs-typical")}
    loss = {k: {s: val_by_epochs[s][k] for s in seeds} for k in ks}
    mean = {k: sum(loss[k].values()) / len(seeds) for k in ks}
    best = min(ks, key=mean.get)

    def worse(k: int) -> bool | None:  # does count k end higher than the best count, beyond the noise?
        return paired(loss[k], loss[best]).above(0.0)

    if best > ks[0]:
        under = worse(ks[0])
    else:  # the smallest count is best: underfitting shows only if the next count is credibly worse
        under = False if worse(ks[1]) else None
    if best < ks[-1]:
        over = worse(ks[-1])
    else:  # the largest count is best: still improving, if the one before is credibly worse
        over = False if worse(ks[-2]) else None
    fit = True if under and over else (False if under is False or over is False else None)
    curve = ", ".join(f"{k}: {mean[k]:.3f}" for k in ks)
    detail = (f"validation loss by epoch count (separate runs, {mean_of(len(seeds))}): {curve}; lowest at {best}; "
              f"fewer ({ks[0]}) {paired(loss[ks[0]], loss[best]).describe('+.3f')} above it, more ({ks[-1]}) "
              f"{paired(loss[ks[-1]], loss[best]).describe('+.3f')}")
    detail += _reading(fit, paired(loss[ks[0]], loss[best]), "too few underfit, too many overfit",
                       "no overfitting side within these counts" if over is False else
                       "no underfitting side within these counts")
    out = {"2.epochs-fit": verdict("2.epochs-fit", fit, detail)}
    if n_train < REALISTIC_TRAIN:
        typical = None
        detail = (f"the best count here is {best} epochs of {n_train} examples; the text's 1-3 is for training sets of "
                  f"thousands of examples, where one epoch is already many updates, so a set of {n_train} cannot test "
                  f"it (chapter 3 takes small sets further)")
    else:
        inside = best <= TYPICAL_EPOCHS[1]
        other = max((k for k in ks if k <= TYPICAL_EPOCHS[1]), default=None) if not inside else \
            min((k for k in ks if k > TYPICAL_EPOCHS[1]), default=None)
        settled = other is not None and worse(other)
        typical = inside if settled else None
        detail = (f"the best count on {n_train} examples is {best} epochs"
                  + (f"; {other} epochs ends {paired(loss[other], loss[best]).describe('+.3f')} higher" if other else ""))
    out["2.epochs-typical"] = verdict("2.epochs-typical", typical, detail)
    return out


def highest_stable(start: float, finals: dict, curves: dict) -> int:
    """Index (in the sorted rates) of the highest peak rate that trained stably: not "too high" by diagnose_rates
    (finite, not above the untrained loss, not oscillating); -1 when none did."""
    diagnosis = diagnose_rates(start, finals, curves)
    stable = [i for i, rate in enumerate(sorted(finals)) if diagnosis[rate] != "too high"]
    return max(stable, default=-1)


def warmup_verdicts(start: float, finals: dict, curves: dict) -> dict[str, Verdict]:
    """2.warmup by the noise rule. finals / curves: {arm: {seed: {peak rate: final validation loss / training
    losses}}} with arms "none" and "warmup" (warmup_range). Per seed, how many grid steps further up the stable range
    reaches with warmup; agrees when that is above 0 beyond the noise, differs when it is credibly below one grid step
    (warmup did not widen the range), else not settled."""
    seeds = sorted(set(finals["none"]) & set(finals["warmup"]))
    rates = sorted(next(iter(finals["none"].values())))
    top = {arm: {s: highest_stable(start, finals[arm][s], curves[arm][s]) for s in seeds} for arm in ("none", "warmup")}
    wider = paired(top["warmup"], top["none"])
    gain = wider.above(0.0)
    holds = True if gain else (False if wider.above(1.0) is False else None)

    def name(i: int) -> str:
        return f"{rates[i]:g}" if i >= 0 else "none"

    detail = (f"highest peak rate that trained stably, per seed ({', '.join(str(s) for s in seeds)}): without warmup "
              f"{', '.join(name(top['none'][s]) for s in seeds)}; with warmup "
              f"{', '.join(name(top['warmup'][s]) for s in seeds)} (rates tried: {', '.join(f'{r:g}' for r in rates)}); "
              f"warmup widened the stable range by {wider.describe('+.2f', ' grid steps')}")
    detail += _reading(holds, wider, "warmup lets a higher peak rate train without diverging",
                       "warmup did not widen the range of rates that train stably here")
    return {"2.warmup": verdict("2.warmup", holds, detail)}
