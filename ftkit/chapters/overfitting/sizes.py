"""Chapter 3's sizes: the overfitting baseline at each profile's sizes (few records, many epochs, a large rank and
rate), one declaration read by every chapter-3 notebook."""

from __future__ import annotations

from dataclasses import dataclass

from ftkit.core.profiles import Profile, get_profile


@dataclass(frozen=True)
class Setup:
    """The overfitting baseline at one profile's sizes: few records, many epochs, a large rank and rate."""

    n_train: int  # training records: scarce, so that memorising them is possible
    n_eval: int  # validation rows and held-out-phrasing rows, each
    steps: int  # optimizer steps of every row (epochs = steps x batch / n_train)
    eval_every: int  # steps between validation losses (the curve early stopping reads)
    seeds: tuple  # training seeds per row (init of the adapters, batch order, dropout masks)
    remedies: tuple | None = None  # the rows this profile trains (None: every entry of REMEDIES)
    batch_size: int = 4
    lora_r: int = 64  # a large adapter: capacity to memorise
    learning_rate: float = 2e-3  # twice the course's LoRA default: big steps towards the training sentences
    lr_scheduler: str = "cosine"  # constant keeps the steps big to the end: overfitting shows in fewer steps


SETUPS = {
    # 8 records x 5 epochs at a constant rate; validation after every step on 8 rows (measured on 2 busy cores: lowest
    # at step 6, then +100 % by step 10). CI's budget (~3 min for the chapter) buys one seed and the baseline plus one
    # remedy per strategy.
    "ci": Setup(n_train=8, n_eval=8, steps=10, eval_every=1, seeds=(0,), lr_scheduler="constant",
                remedies=("baseline", "early stopping", "weight decay", "4x records", "lower rank")),
    # 12 epochs, 32 validation rows; every remedy, and two seeds per row show how much of a difference is noise (about
    # half the time of 48 steps). Cosine, not constant: 24 steps at a constant 2e-3 collapsed the model at the end
    # (validation loss 0.24 -> 1.19 at step 24, repeated keys, 0 % exact match even on the training sentences).
    "cpu": Setup(n_train=8, n_eval=32, steps=24, eval_every=2, seeds=(0, 1)),
    "gpu": Setup(n_train=8, n_eval=64, steps=64, eval_every=4, seeds=(0, 1)),
    "t4": Setup(n_train=8, n_eval=64, steps=64, eval_every=4, seeds=(0, 1)),
}


def setup_of(profile: Profile | None = None) -> Setup:
    """The baseline's sizes for a profile."""
    return SETUPS[(profile or get_profile()).name]
