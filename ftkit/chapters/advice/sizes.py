"""Chapter 5's sizes: the runs every arm makes at each profile's sizes, one declaration read by every chapter-5
notebook."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftkit.core.profiles import Profile, env_seeds, get_profile


@dataclass(frozen=True)
class Setup:
    """One run of every arm (plain LoRA and each variant) at one profile's sizes: the same budget for all."""

    n_train: int  # training records, one phrasing each: steps x batch / n_train epochs
    n_eval: int  # validation rows and test rows, each (every arm is judged on the test rows)
    steps: int  # optimizer steps of every arm: the same budget
    batch_size: int
    eval_every: int  # steps between validation losses (the curve the training-loss rule is read against)
    seeds: tuple  # training seeds per arm (init of the adapters, batch order, noise): the noise rule needs 3
    generate: bool = True  # generate answers: every test row's (exact match) and the general questions' (5.2)


SETUPS = {
    # 16 of 32 records; one seed, which measures no noise, so every comparison of arms is "not settled" in ci: the
    # chapter's code paths run, its verdicts are the cpu profile's. No generation: answering the 8 test rows was a third
    # of a ci arm (DoRA's: 23 of 53 s), and the verdicts read the test loss. 4 steps keep make test under 20 minutes.
    "ci": Setup(n_train=32, n_eval=8, steps=4, batch_size=4, eval_every=2, seeds=(0,), generate=False),
    # One epoch of 256 records, 32 test rows, three seeds (the fewest the paired noise rule decides on).
    "cpu": Setup(n_train=256, n_eval=32, steps=32, batch_size=8, eval_every=4, seeds=(0, 1, 2)),
    "gpu": Setup(n_train=1600, n_eval=64, steps=100, batch_size=16, eval_every=10, seeds=(0, 1, 2)),
    "t4": Setup(n_train=960, n_eval=64, steps=60, batch_size=8, eval_every=10, seeds=(0, 1, 2)),
}


def setup_of(profile: Profile | None = None) -> Setup:
    """The arms' sizes for a profile; $FTKIT_SEEDS, when set, says how many seeds each arm trains on."""
    setup = SETUPS[(profile or get_profile()).name]
    seeds = env_seeds()
    return setup if seeds is None else replace(setup, seeds=tuple(range(seeds)))
