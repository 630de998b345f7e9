"""Chapter 4's sizes: the sharded run's steps, global batch and sequence length per profile, one declaration."""

from __future__ import annotations


def run_sizes(profile) -> dict:
    """Steps (max_steps), global batch and packed sequence length of chapter 4's runs at a profile. The processes run on the CPU in
    every profile (gloo: one GPU cannot hold two ranks, and Colab has one), so a GPU profile, whose sizes are made for
    its GPU, gets the cpu profile's: on Colab the run uses its 2 CPUs like a laptop's."""
    from ftkit.core.profiles import PROFILES

    cpu = profile if profile.device == "cpu" else PROFILES["cpu"]
    return {"max_steps": max(3, cpu.max_steps // 8),  # ci: 3, cpu: 10 (full FT on 2 CPU processes: seconds per step)
            "batch_size": cpu.batch_size,  # global: split evenly over the processes
            "seq_len": cpu.max_seq_len // 4}  # packed blocks of course text: every process sees as many tokens
