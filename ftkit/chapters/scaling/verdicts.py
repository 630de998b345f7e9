"""Chapter 4's verdicts: each process holds 1/N, the sharded run trains as one process does, the gathered checkpoint is
the same model, and the 16 bytes per parameter of mixed-precision AdamW, from what the runs measured."""

from __future__ import annotations

from ftkit.chapters.scaling.sharded import bytes_per_param, loss_gap, per_process

LOSS_TOLERANCE = 1e-4  # fp32: the same sums in another order differ by ~1e-6; a wrong batch split moves loss by >1e-2


SHARD_TOLERANCE = 0.01  # FSDP pads a tensor whose first dimension does not split evenly: allow 1 % over 1/N


def sharding_holds(single: dict, sharded: dict, bucket: str = "weights") -> tuple[bool, str]:
    """Does every process of the sharded run hold 1/N of what the single process holds (within SHARD_TOLERANCE)?"""
    whole, n = per_process(single, bucket)[0], sharded["n_processes"]
    parts = per_process(sharded, bucket)
    worst = max(parts) / whole
    holds = n > 1 and worst <= (1 + SHARD_TOLERANCE) / n
    return holds, (f"{bucket}: one process holds {whole:,} bytes alone; with FSDP over {n} processes each holds "
                   f"{', '.join(f'{p:,}' for p in parts)} = {worst:.4f} of it (1/{n} = {1 / n:.4f})")


def loss_match_holds(single: dict, sharded: dict, tolerance: float = LOSS_TOLERANCE) -> tuple[bool, str]:
    """Does the sharded run's loss curve equal the single-process one (same global batch) within `tolerance`?"""
    gap = loss_gap(single, sharded)
    ranks = [row["losses"] for row in sharded["per_process_bytes"]]
    spread = max(abs(a - b) for a, b in zip(ranks[0], ranks[-1])) if len(ranks) > 1 else 0.0
    detail = (f"{len(single['losses'])} steps, largest loss difference {gap:.2e} (tolerance {tolerance:.0e}), "
              f"while the processes' own losses on their halves of each batch differ by up to {spread:.2e}")
    return gap <= tolerance, detail


def checkpoint_holds(max_weight_diff: float, tolerance: float = 1e-5) -> tuple[bool, str]:
    """Does the gathered checkpoint (loaded with from_pretrained) equal the single-process model's weights?"""
    return max_weight_diff <= tolerance, (f"from_pretrained loads the gathered folder; its weights differ from the "
                                          f"single-process model's by at most {max_weight_diff:.1e} "
                                          f"(tolerance {tolerance:.0e})")


def sixteen_bytes_holds(single: dict) -> tuple[bool, str]:
    """Is full fine-tuning with fp32 AdamW states 16 bytes per parameter before activations (ZeRO paper, sec. 3.1)?"""
    measured = bytes_per_param(single)
    return abs(measured - 16) < 0.1, (f"measured {measured:.3f} bytes per parameter for weights + gradients + AdamW's "
                                      f"two moments (4 + 4 + 8)")
