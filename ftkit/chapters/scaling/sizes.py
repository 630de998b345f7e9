"""Chapter 4's sizes: the sharded run's steps, global batch and longest row per profile, one declaration."""

from __future__ import annotations


def run_sizes(profile) -> dict:
    """Steps (max_steps), global batch and longest row (max_seq_len) of chapter 4's runs at a profile. The processes run
    on the CPU in every profile (gloo: one GPU cannot hold two ranks, and Colab has one), so a GPU profile, whose sizes
    are made for its GPU, gets the cpu profile's: on Colab the run uses its 2 CPUs like a laptop's."""
    from ftkit.core.profiles import PROFILES

    cpu = profile if profile.device == "cpu" else PROFILES["cpu"]
    return {"max_steps": max(3, cpu.max_steps // 8),  # ci: 3, cpu: 10 (full FT on 2 CPU processes: seconds per step);
            # 3 steps are the fewest the noise rule reads
            "batch_size": cpu.batch_size // 2,  # global, split over the processes: ci 2, cpu 4 whole conversations
            # (~95 tokens each: full FT's step time grows with the tokens)
            "max_seq_len": cpu.max_seq_len}  # one conversation a row, as the course trains: none is cut at 128
