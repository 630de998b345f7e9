"""Chapter 2's sizes per profile: how long each run is, how many examples per step, how many rates, ranks, batch
sizes and epochs each notebook tries; one declaration the notebooks read (no branch on the profile in a cell).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftkit.core.profiles import Profile, env_seeds


@dataclass(frozen=True)
class Sizes:
    """Chapter 2 at one profile's sizes."""

    validation_rows: int | None  # validation rows each run evaluates (None: the profile's n_eval); ci: 8 halve the cost
    lr_steps: int  # 2.1: steps of every run of both learning-rate sweeps
    lr_batch: int  # 2.1: examples per step
    lr_points: int  # 2.1: rates per method, evenly over 4 decades (5: one per decade; 9: half-decades)
    noise_batches: tuple  # 2.2: batch sizes whose gradient noise is measured
    noise_repeats: int  # 2.2: independent batches per size
    accumulation_steps: int  # 2.2: steps of batch 8 against 4 x 2 accumulation
    rank_steps: int  # 2.3: steps of every rank and alpha run
    rank_batch: int  # 2.3: examples per step
    rank_scored: tuple  # 2.3: splits scored by generation after each rank run (generation is slow on a CPU)
    alpha_ranks: tuple  # 2.3: ranks at which the alpha schemes are compared
    small_train: int  # 2.4: the small training set of the epochs runs
    epochs: tuple  # 2.4: the epoch counts, one run each (its own schedule), on every seed
    warmup_steps: int  # 2.4: length of each run of the warmup comparison (warmup: its first half)
    explore_steps: int  # 2.4: the explorer's run
    warmup_rates: tuple = (3e-3, 1e-2, 3e-2)  # 2.4: peak rates tried with and without warmup (2.1: 1e-1 diverges)
    # 2.3: the rates each adapter placement (all-linear, attention-only, MLP-only at matched parameters) tries on the
    # first seed, half a decade apart around LoRA's default 1e-3; the other seeds train its best one
    placement_rates: tuple = (3e-4, 1e-3, 3e-3)
    # 2.3: the rates of the learning-rate sweep at alpha = 2r at the smallest and the largest alpha rank (a decade
    # apart, as 2.1's LoRA grid: the best rate may move by r1/r0 = 16x between them)
    alpha_rates: tuple = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    # Every comparison the noise rule decides (2.1's continuation, 2.3's capacity and alpha, 2.4's epochs and warmup)
    # trains each arm on these seeds: fewer than 3 measure no noise, and those verdicts then say "not settled". ci
    # trains one (make test stays under 20 minutes; 3 seeds took its notebooks from ~500 to 770 s): its verdicts on
    # these claims are "not settled", and the cpu and GPU profiles decide them.
    seeds: tuple = (0, 1, 2)
    note: str = ""  # what a learner should know about results at these sizes ("" when nothing)


SIZES = {
    "ci": Sizes(validation_rows=8, lr_steps=3, lr_batch=2, lr_points=5, noise_batches=(1, 2, 4), noise_repeats=3,
                accumulation_steps=2, rank_steps=4, rank_batch=2, rank_scored=(), alpha_ranks=(4, 64), small_train=8,
                epochs=(1, 2, 4), warmup_steps=4, warmup_rates=(3e-3, 1e-2), explore_steps=4, seeds=(0,),
                placement_rates=(1e-3,), alpha_rates=(1e-4, 1e-3, 1e-2),
                note="- (ci profile: a few steps per run; FTKIT_PROFILE=cpu trains 13 steps of 8 per rate, the GPU "
                     "profile reads the best rates at half a decade.)"),
    # a laptop: 13-step runs of 8 (a sixth of the profile's 80), one rate per decade, every rank scored
    "cpu": Sizes(validation_rows=None, lr_steps=13, lr_batch=8, lr_points=5, noise_batches=(1, 2, 4, 8, 16),
                 noise_repeats=6, accumulation_steps=4, rank_steps=13, rank_batch=8, rank_scored=("test",),
                 alpha_ranks=(4, 16, 64), small_train=32, epochs=(1, 2, 4, 8), warmup_steps=12, explore_steps=26),
    "gpu": Sizes(validation_rows=None, lr_steps=33, lr_batch=16, lr_points=9, noise_batches=(1, 2, 4, 8, 16),
                 noise_repeats=6, accumulation_steps=4, rank_steps=33, rank_batch=16, rank_scored=("test",),
                 alpha_ranks=(4, 16, 64), small_train=32, epochs=(1, 2, 4, 8), warmup_steps=50, explore_steps=66),
    "t4": Sizes(validation_rows=None, lr_steps=20, lr_batch=8, lr_points=5, noise_batches=(1, 2, 4, 8, 16),
                noise_repeats=6, accumulation_steps=4, rank_steps=20, rank_batch=8, rank_scored=("test",),
                alpha_ranks=(4, 16, 64), small_train=32, epochs=(1, 2, 4, 8), warmup_steps=30, explore_steps=40),
}


def sizes(profile: Profile, seeds: int | None = None) -> Sizes:
    """Chapter 2's sizes for a profile (by its name). seeds: how many seeds each compared arm trains on (default: the
    environment's FTKIT_SEEDS, else 3); fewer saves time on a slow laptop, and the verdicts that need the noise then
    say "not settled"."""
    if profile.name not in SIZES:
        raise ValueError(f"Chapter 2 has no sizes for profile {profile.name!r}: add it to "
                         f"ftkit.hyperparameters.SIZES (known: {', '.join(SIZES)})")
    seeds = env_seeds() if seeds is None else seeds
    if seeds is None:
        return SIZES[profile.name]
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"seeds must be a whole number of seeds, 1 or more (3 measure the noise); got {seeds!r}")
    return replace(SIZES[profile.name], seeds=tuple(range(seeds)))


def with_validation_rows(data, s: Sizes):
    """The dataset with its validation split cut to the chapter's validation_rows (unchanged when None)."""
    if s.validation_rows is None:
        return data
    return {**data, "validation": data["validation"].select(range(s.validation_rows))}
