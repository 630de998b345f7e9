"""Training speed measured so that the machine's load does not move a comparison: interleaved rounds, steady state.

A training run's tokens/s includes its warm-up steps, and two runs minutes apart meet different loads on a shared
machine (a fresh-clone `make course` beside other work printed LoRA at x0.95 full FT's speed; quiet, the same machine
gave x1.15). Here every model takes its warm-up steps untimed, then the models take turns: round after round, each
times the same number of steps on the same batch, in a rotating order. Load that comes and goes hits the models of a
round alike, so the per-round ratios are paired measurements (ftkit.core.evidence) and their median is the speed ratio.

Used by chapter 1's comparison (ftkit.methods.compare_methods) for its Training Speed row.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ftkit.core.memory import make_optimizer
from ftkit.core.train import training_step


@dataclass(frozen=True)
class SpeedRounds:
    """tokens/s per model and round (same batch, same steps per round, models interleaved)."""

    rates: dict[str, list[float]]  # {name: [tokens/s of round 1, round 2, ...]}
    steps_per_round: int
    warmup_steps: int
    tokens_per_step: int  # non-padding tokens of the batch

    def median(self, name: str) -> float:
        return statistics.median(self.rates[name])

    def ratios(self, a: str, b: str) -> list[float]:
        """a's tokens/s over b's, per round (paired: the same round met the same load)."""
        return [x / y for x, y in zip(self.rates[a], self.rates[b], strict=True)]

    def how(self) -> str:
        """How it was measured, for a table's footnote."""
        rounds = len(next(iter(self.rates.values())))
        return (f"median of {rounds} interleaved rounds of {self.steps_per_round} training step(s) each on the same "
                f"batch, after {self.warmup_steps} untimed warm-up step(s) per method, with the kernels the course's "
                "trainer uses (fused AdamW; eager attention on the CPU)")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_speed(models: dict, batch: dict, *, precision: str, rounds: int = 5, steps_per_round: int = 1,
                      warmup_steps: int = 1, optimizer: str = "adamw_torch", progress: bool = True) -> SpeedRounds:
    """Time full training steps (ftkit.core.train.training_step: forward, backward, optimizer step) of each model, in
    rounds. `models`: {name: model with its trainable parameters set}; `batch`: input_ids and attention_mask (labels
    default to input_ids). The models are trained in place (their weights change: use copies you can discard).
    `progress`: one bar over the timed steps."""
    from tqdm.auto import tqdm

    if rounds < 1 or steps_per_round < 1 or warmup_steps < 0:
        raise ValueError(f"rounds and steps_per_round must be >= 1 and warmup_steps >= 0 (got {rounds}, "
                         f"{steps_per_round}, {warmup_steps}).")
    names = list(models)
    tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    state = {}
    for name, model in models.items():
        device = next(model.parameters()).device
        moved = {k: v.to(device) for k, v in batch.items()}
        moved.setdefault("labels", moved["input_ids"])
        trainable = [p for p in model.parameters() if p.requires_grad]
        state[name] = (model, moved, make_optimizer(trainable, optimizer), device)
        model.train()

    def step(name: str) -> None:
        model, inputs, opt, _ = state[name]
        training_step(model, inputs, opt, precision)

    for name in names:
        for _ in range(warmup_steps):
            step(name)
    rates = {name: [] for name in names}
    bar = tqdm(total=rounds * len(names) * steps_per_round, desc="timing interleaved steps", disable=not progress)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no model always first after a pause
            device = state[name][3]
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step(name)
            _synchronize(device)
            rates[name].append(tokens * steps_per_round / (time.perf_counter() - start))
            bar.update(steps_per_round)
    bar.close()
    for model, *_ in state.values():
        model.zero_grad(set_to_none=True)
    return SpeedRounds(rates=rates, steps_per_round=steps_per_round, warmup_steps=warmup_steps,
                       tokens_per_step=tokens)
