"""Chapter 4's verdicts: each process holds 1/N, the sharded run trains as one process does, the gathered checkpoint is
the same model, and the 16 bytes per parameter of mixed-precision AdamW, from what the runs measured."""

from __future__ import annotations

from ftkit.chapters.scaling.sharded import bytes_per_param, loss_gap, per_process, smallest_n
from ftkit.core.claims import Verdict, verdict
from ftkit.core.estimate import fits_on

LOSS_TOLERANCE = 1e-4  # fp32: the same sums in another order differ by ~1e-6; a wrong batch split moves loss by >1e-2
SHARD_TOLERANCE = 0.01  # FSDP pads a tensor whose first dimension does not split evenly: allow 1 % over 1/N
CHECKPOINT_TOLERANCE = 1e-5  # the gathered checkpoint's weights equal the single process's (fp32 round trip)
SIXTEEN_TOLERANCE = 0.1  # bytes per parameter: 16 for fp32 weights + gradients + AdamW's two moments
NODE_GPUS = 8  # one node of the cluster claim: 8 GPUs
BUCKETS = ("weights", "gradients", "optimizer")  # what FSDP shards, as the worker reports it per process


def sharding_holds(single: dict, sharded: dict, bucket: str = "weights") -> tuple[bool, str]:
    """Does every process of the sharded run hold 1/N of what the single process holds (within SHARD_TOLERANCE)?"""
    whole, n = per_process(single, bucket)[0], sharded["n_processes"]
    parts = per_process(sharded, bucket)
    worst = max(parts) / whole
    holds = n > 1 and worst <= (1 + SHARD_TOLERANCE) / n
    return holds, (f"{bucket}: one process holds {whole:,} bytes alone; with FSDP over {n} processes each holds "
                   f"{', '.join(f'{p:,}' for p in parts)} = {worst:.4f} of it (1/{n} = {1 / n:.4f})")


def sharding_verdict(single: dict, sharded: dict) -> Verdict:
    """4.sharding: every process of the sharded run holds 1/N of the weights, gradients and optimizer state."""
    return verdict("4.sharding", all(sharding_holds(single, sharded, bucket)[0] for bucket in BUCKETS),
                   sharding_holds(single, sharded, "weights")[1])


def loss_match_verdict(single: dict, sharded: dict, tolerance: float = LOSS_TOLERANCE) -> Verdict:
    """Does the sharded run's loss curve equal the single-process one (same global batch) within `tolerance`?"""
    gap = loss_gap(single, sharded)
    ranks = [row["losses"] for row in sharded["per_process_bytes"]]
    spread = max(abs(a - b) for a, b in zip(ranks[0], ranks[-1])) if len(ranks) > 1 else 0.0
    detail = (f"{len(single['losses'])} steps, largest loss difference {gap:.2e} (tolerance {tolerance:.0e}), "
              f"while the processes' own losses on their halves of each batch differ by up to {spread:.2e}")
    return verdict("4.same-training", gap <= tolerance, detail)


def checkpoint_verdict(max_weight_diff: float, tolerance: float = CHECKPOINT_TOLERANCE) -> Verdict:
    """4.checkpoint: the gathered checkpoint (loaded with from_pretrained) equals the single-process model's weights."""
    return verdict("4.checkpoint", max_weight_diff <= tolerance,
                   f"from_pretrained loads the gathered folder; its weights differ from the single-process model's by "
                   f"at most {max_weight_diff:.1e} (tolerance {tolerance:.0e})")


def sixteen_bytes_verdict(single: dict) -> Verdict:
    """4.16-bytes: full fine-tuning with fp32 AdamW states is 16 bytes per parameter before activations (ZeRO paper,
    sec. 3.1)."""
    measured = bytes_per_param(single)
    return verdict("4.16-bytes", abs(measured - 16) < SIXTEEN_TOLERANCE,
                   f"measured {measured:.3f} bytes per parameter for weights + gradients + AdamW's two moments "
                   "(4 + 4 + 8)")


def cluster_verdict(rows: list[dict], qlora_7b, gib_per_gpu: float, gpu: str = "80 GB") -> Verdict:
    """4.cluster: full fine-tuning of a 70B model needs more than one node of NODE_GPUS GPUs (of `gib_per_gpu` usable
    GiB, a `gpu` card) even with ZeRO-3 (model states alone, from sharding_table's rows); QLoRA puts a 7B model on one
    GPU (its estimate, qlora_7b)."""
    full_7b, full_70b = smallest_n(rows, "7B", "zero3", gib_per_gpu), smallest_n(rows, "70B", "zero3", gib_per_gpu)
    one_gpu = next((gpu for gpu, ok in fits_on(qlora_7b).items() if ok), "GPU of the list: none")
    return verdict("4.cluster", full_70b is None or full_70b > NODE_GPUS,
                   f"full FT of 70B needs {full_70b} GPUs of {gpu} even with ZeRO-3, more than one {NODE_GPUS}-GPU node, "
                   f"for its model states alone; 7B needs {full_7b} (one node), 1B fits one GPU; QLoRA puts 7B on one "
                   f"{one_gpu}")
