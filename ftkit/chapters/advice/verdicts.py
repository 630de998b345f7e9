"""Chapter 5's verdicts: each piece of the field's advice and each newer method's claim, decided from the arms'
measurements with the course's one noise rule (ftkit.core.evidence), paired by seed against plain LoRA.

Used in notebooks/05_field_advice: `ftkit.show(ftkit.advice.method_verdict(rows, "DoRA"))`.
"""

from __future__ import annotations

import math
import statistics

from ftkit.chapters.advice.arms import ARMS, REFERENCE
from ftkit.chapters.advice.runs import ArmRow
from ftkit.core.claims import Verdict, verdict
from ftkit.core.evidence import Paired, by_seed, log_ratios, mean_of, paired, relative_change
from ftkit.core.memory import human_bytes

RULE_THRESHOLD = 0.2  # Unsloth's guide: "training loss below 0.2 means overfitting"
CONTAMINATION = 1e-3  # largest logit difference (fp32) still counted as the same computation: fp32 noise is ~5e-5
TRAINER_TOLERANCE = 0.01  # accumulated update against the big batch's, relative to the update: fp32 noise is ~1e-7

Rows = dict[str, list[ArmRow]]


def mean(rows: list[ArmRow], value=lambda r: r.test_loss) -> float:
    return statistics.fmean(value(r) for r in rows)


def versus_plain(rows: Rows, name: str, value=lambda r: r.test_loss) -> Paired:
    """An arm's relative change from plain LoRA, seed by seed (same data order, same seeds)."""
    return relative_change(by_seed(rows[name], value), by_seed(rows[REFERENCE], value))


def _decided(change: Paired) -> bool | None:
    """Credibly lower than plain LoRA: True; credibly higher: False; else None."""
    return change.below(0.0)


def exact_match(rows: list[ArmRow]) -> str:
    """The mean test exact match of an arm's rows as a percentage, or "—" where the profile does not generate."""
    values = [r.exact_match for r in rows]
    return "—" if None in values else f"{statistics.fmean(values):.0%}"


def _quality(rows: Rows, name: str) -> str:
    """'test loss 0.061 against 0.058 for plain LoRA, change +5.2% ± 3.1% (...); exact match 75% against 81%'"""
    change = versus_plain(rows, name)
    undecided = "" if change.above(0) is not None or change.n < 2 else f", {change.undecided()}"
    em = [exact_match(rows[n]) for n in (name, REFERENCE)]
    return (f"test loss {mean(rows[name]):.4f} against {mean(rows[REFERENCE]):.4f} for plain LoRA, change "
            f"{change.describe('+.1%')}{undecided}" + ("" if "—" in em else f"; test exact match {em[0]} against {em[1]}"))


def table(rows: Rows, kl: bool = False) -> str:
    """One line per arm, means over its seeds: test loss, exact match ("—" where not generated), tokens/s, the memory
    of one training step (counted), trainable parameters; with kl=True the KL on general text instead of the last two."""
    head = f"{'arm':<20}{'test loss':>10}{'exact match':>13}{'tokens/s':>10}"
    head += f"{'KL on general text':>20}" if kl else f"{'step memory':>13}{'trainable':>12}"
    lines = [head]
    for name, rs in rows.items():
        line = f"{name:<20}{mean(rs):>10.4f}{exact_match(rs):>13}{mean(rs, lambda r: r.tokens_per_s):>10.0f}"
        line += (f"{mean(rs, lambda r: r.mean_kl):>20.4f}" if kl else
                 f"{human_bytes(mean(rs, lambda r: r.step_memory['total'])):>13}{rs[0].trainable_params:>12,}")
        lines.append(line)
    return "\n".join(lines)


def completion_verdict(rows: Rows) -> Verdict:
    """5.completion-only: holds when the loss on the answer only (plain LoRA) ends with a credibly lower test loss than
    the loss on the whole sequence, differs when credibly higher. Both judged on the answer's loss (the task)."""
    change = versus_plain(rows, "whole-sequence loss")
    return verdict("5.completion-only", change.above(0.0),
                   f"whole-sequence loss: {_quality(rows, 'whole-sequence loss')} (both measured on the answer's "
                   "tokens, what the task asks for)")


def layers_verdict(rows: Rows) -> Verdict:
    """5.which-layers: holds when adapters on every linear layer (plain LoRA) end credibly lower than on q and v only,
    at the same rank, rate and steps; differs when credibly higher."""
    change = versus_plain(rows, "q, v only")
    params = [rows[n][0].trainable_params for n in ("q, v only", REFERENCE)]
    return verdict("5.which-layers", change.above(0.0),
                   f"q, v only: {_quality(rows, 'q, v only')}; trainable {params[0]:,} against {params[1]:,} (same r: "
                   "the guides' choice; chapter 2's 2.rank-all-linear compares placements at matched parameters)")


def speed_change(rows: Rows, name: str) -> Paired:
    """log(tokens/s of the arm / plain LoRA's), seed by seed."""
    return log_ratios(*(by_seed(rows[n], lambda r: r.tokens_per_s) for n in (name, REFERENCE)))


def speed_and_memory(rows: Rows, name: str) -> str:
    """'x0.52 plain LoRA's tokens/s (...); one step holds 1.2 GB against 1.0 GB (activations 300 MB against 250 MB)'"""
    speed = speed_change(rows, name)
    held = [rows[n][0].step_memory for n in (name, REFERENCE)]
    return (f"x{math.exp(speed.mean):.2f} plain LoRA's tokens/s ({mean_of(speed.n)}); one training step holds "
            f"{human_bytes(held[0]['total'])} against {human_bytes(held[1]['total'])} (activations "
            f"{human_bytes(held[0]['activations'])} against {human_bytes(held[1]['activations'])}; counted)")


def steps_to_reach(row: ArmRow, target: float) -> int | None:
    """The first evaluated step whose validation loss is at or below target (None: never in the run)."""
    return next((s for s, v in zip(*row.losses("eval_loss"), strict=True) if v <= target), None)


def method_verdict(rows: Rows, name: str) -> Verdict:
    """5.neftune, 5.dora, 5.loraplus: holds when the method ends with a credibly lower test loss than plain LoRA at the
    same budget (steps, rate, rank, seeds), differs when credibly higher, else not settled; speed and memory beside.
    LoRA+ also says at which step it reached plain LoRA's final validation loss (its "faster convergence")."""
    arm = ARMS[name]
    detail = f"{name}: {_quality(rows, name)}; {speed_and_memory(rows, name)}"
    if name == "LoRA+":
        reached = [steps_to_reach(r, by_seed(rows[REFERENCE], lambda x: x.final())[r.seed]) for r in rows[name]]
        detail += (f"; reached plain LoRA's final validation loss at step "
                   f"{', '.join('never' if s is None else str(s) for s in reached)} of {rows[name][0].steps} "
                   f"(per seed)")
    return verdict(arm.claim, _decided(versus_plain(rows, name)), detail)


def padding_free_verdict(rows: Rows, check: dict) -> Verdict:
    """5.padding-free: differs when a padding-free row's logits are not those of its examples alone (contamination)
    or when it trains credibly slower than padded batches; holds when they are the same and it is credibly faster."""
    speed = speed_change(rows, "padding-free")
    clean = check["padding_free"] <= CONTAMINATION
    faster = speed.above(0.0)
    holds = False if not clean or faster is False else faster
    detail = (f"the flat row's logits are {check['padding_free']:.1e} from each example's alone (fp32, "
              f"{check['rows']} examples, {check['tokens']} tokens; {'no ' if clean else 'cross-'}contamination: limit "
              f"{CONTAMINATION:g}); with a KV cache they are {check['with_cache']:.1f} apart, and as one document "
              f"{check['one_document']:.1f}; speed {speed_and_memory(rows, 'padding-free')}; "
              f"{_quality(rows, 'padding-free')}")
    return verdict("5.padding-free", holds, detail)


def forgetting_verdict(rows: Rows) -> Verdict:
    """5.forgetting: holds when full fine-tuning moves the model's predictions on general text credibly more than
    LoRA (mean KL(base || tuned) per seed), each at its own best rate, differs when credibly less. The detail says what
    each learned (test loss), so "forgets less" is read beside "learns less"."""
    kl = paired(by_seed(rows["full FT"], lambda r: r.mean_kl), by_seed(rows[REFERENCE], lambda r: r.mean_kl))
    learned = versus_plain(rows, "full FT")
    detail = (f"KL(base || tuned) on general text, nats per token ({mean_of(len(rows[REFERENCE]))}): full FT "
              f"{mean(rows['full FT'], lambda r: r.mean_kl):.4f}, LoRA {mean(rows[REFERENCE], lambda r: r.mean_kl):.4f}")
    if "QLoRA" in rows:
        detail += (f", QLoRA {mean(rows['QLoRA'], lambda r: r.mean_kl):.4f} (of which its 4-bit base alone "
                   f"{mean(rows['QLoRA'], lambda r: statistics.fmean(r.kl_quantized)):.4f})")
    detail += (f"; full minus LoRA {kl.describe('+.4f')}; task: test loss full FT {mean(rows['full FT']):.4f} "
               f"against LoRA {mean(rows[REFERENCE]):.4f} (change {learned.describe('+.1%')})")
    return verdict("5.forgetting", kl.above(0.0), detail)


def rule_reading(row: ArmRow, threshold: float = RULE_THRESHOLD) -> dict | None:
    """Where the training-loss rule fires in a run (the first logged step whose training loss is below threshold) and
    what validation did after: the validation loss at the first evaluation at or after that step, and the lowest of
    the evaluations after it. None when the rule never fires, or fires at or after the last evaluation."""
    fired = next((s for s, v in zip(*row.losses("train_loss"), strict=True) if v < threshold), None)
    steps, val = row.losses("eval_loss")
    at = next((i for i, s in enumerate(steps) if fired is not None and s >= fired), None)
    if at is None or at == len(steps) - 1:
        return None
    return {"fired": fired, "step": steps[at], "val": val[at], "later_min": min(val[at + 1:]),
            "later_step": steps[at + 1 + val[at + 1:].index(min(val[at + 1:]))]}


def train_loss_rule_verdict(rows: list[ArmRow], threshold: float = RULE_THRESHOLD) -> Verdict:
    """5.train-loss-rule: differs when, after the training loss fell below 0.2, validation loss still fell credibly
    (the rule calls overfitting while the model still improves on new people), holds when it credibly only rose
    after (the rule fired after the turn), else not settled; not settled too when the rule never fired."""
    readings = {r.seed: rule_reading(r, threshold) for r in rows}
    fired = {s: x for s, x in readings.items() if x is not None}
    if not fired:
        return verdict("5.train-loss-rule", None, f"the training loss never fell below {threshold} early enough to "
                       "see validation after it, in any seed")
    drop = Paired(tuple(x["val"] - x["later_min"] for x in fired.values()))
    where = "; ".join(f"seed {s}: below {threshold} at step {x['fired']}, validation {x['val']:.3f} at step "
                      f"{x['step']}, then {x['later_min']:.3f} at step {x['later_step']}" for s, x in fired.items())
    holds = drop.below(0.0)
    return verdict("5.train-loss-rule", holds,
                   f"{where}; validation fell after the rule fired by {drop.describe('+.3f')}"
                   + ("" if holds is not None or drop.n < 2 else f" ({drop.undecided()})"))


def accumulation_verdict(trainer: dict, gap: dict) -> Verdict:
    """5.accumulation: holds when transformers' Trainer, on examples of uneven length, gives the accumulated update of
    the big batch's within TRAINER_TOLERANCE of the update, differs when not; not settled when the micro-batches of the
    hand check had equal answer tokens (then no normalisation can show a difference)."""
    if len(set(gap["tokens"])) == 1:
        return verdict("5.accumulation", None, f"the micro-batches had equal answer tokens ({gap['tokens']}): lengths "
                       "this even cannot tell the normalisations apart")
    acc = trainer["accumulated"].hyperparameters
    big = acc["batch_size"] * acc["gradient_accumulation_steps"]
    return verdict("5.accumulation", trainer["weight_diff"] <= TRAINER_TOLERANCE,
                   f"the Trainer's update with batch {acc['batch_size']} x {acc['gradient_accumulation_steps']} "
                   f"accumulation is {trainer['weight_diff']:.1e} of the update away from batch {big}'s (limit {TRAINER_TOLERANCE:.0%}; fp32, SGD); by hand, on micro-batches "
                   f"of {', '.join(map(str, gap['tokens']))} answer tokens, normalising by the whole batch's tokens is "
                   f"{gap['whole_batch']:.1e} off, by each micro-batch's own (before transformers' fix) "
                   f"{gap['per_micro_batch']:.0%} off")


def chapter_verdicts(rows: Rows, *, check: dict | None = None, trainer: dict | None = None, gap: dict | None = None
                     ) -> dict[str, Verdict]:
    """Every verdict of the chapter the given measurements decide (an arm missing leaves its verdict out)."""
    out = {}
    if "whole-sequence loss" in rows:
        out["5.completion-only"] = completion_verdict(rows)
    if "q, v only" in rows:
        out["5.which-layers"] = layers_verdict(rows)
    if REFERENCE in rows:
        out["5.train-loss-rule"] = train_loss_rule_verdict(rows[REFERENCE])
    if trainer is not None and gap is not None:
        out["5.accumulation"] = accumulation_verdict(trainer, gap)
    if "full FT" in rows:
        out["5.forgetting"] = forgetting_verdict(rows)
    for name in ("NEFTune", "DoRA", "LoRA+"):
        if name in rows:
            out[ARMS[name].claim] = method_verdict(rows, name)
    if "padding-free" in rows and check is not None:
        out["5.padding-free"] = padding_free_verdict(rows, check)
    return out
