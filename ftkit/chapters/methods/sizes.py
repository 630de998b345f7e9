"""Chapter 1's sizes per profile: the training steps of 1.1, 1.3 and 1.4, the prompts 1.4 answers, and `make course`'s
steps; one declaration the notebooks and the CLI read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftkit.core.profiles import Profile


@dataclass(frozen=True)
class Sizes:
    """Chapter 1 at one profile's sizes."""

    steps: int  # training steps of every run of 1.3 (each method, the same), of each adapter in 1.4, of 1.1's loop
    shown: int  # prompts each adapter of 1.4 answers per task (generation is the slow part on a CPU)
    cli_steps: int  # steps per method of `python -m ftkit compare` (make course)
    speed_rounds: int = 5  # the Training Speed row: interleaved rounds of timed steps per method (ftkit.core.speed)
    speed_steps: int = 1  # ... timed steps per method and round
    note: str = ""  # what a learner should know about results at these sizes ("" when nothing)


SIZES = {
    # a third of the profile's default run; ci: 4 steps (the least that moves the loss), make course 12
    # ci: 3 speed rounds, the fewest the noise rule reads
    "ci": Sizes(steps=4, shown=8, cli_steps=12, speed_rounds=3,
                note="- (ci profile: a few steps only; with FTKIT_PROFILE=cpu, or `python -m ftkit compare`, the scores "
                     "move much more.)"),
    # make course on a CPU: 3 methods x 12 steps + scoring, ~4 min on 2 cores (20 steps took ~10 min on busy cores)
    "cpu": Sizes(steps=26, shown=32, cli_steps=12, speed_rounds=7),
    "gpu": Sizes(steps=66, shown=32, cli_steps=200, speed_rounds=9, speed_steps=5),
    "t4": Sizes(steps=40, shown=16, cli_steps=120, speed_rounds=9, speed_steps=3),
}


def sizes(profile: Profile) -> Sizes:
    """Chapter 1's sizes for a profile (by its name)."""
    if profile.name not in SIZES:
        raise ValueError(f"Chapter 1 has no sizes for profile {profile.name!r}: add it to ftkit.methods.SIZES "
                         f"(known: {', '.join(SIZES)})")
    return SIZES[profile.name]
