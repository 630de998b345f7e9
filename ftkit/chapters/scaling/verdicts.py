"""Chapter 4's verdicts: each process holds 1/N of the model states, the sharded run trains as one process does, the
gathered checkpoint is the same model, 16 bytes per parameter, and what a cluster buys, from what the runs measured.

The memory rules read what the backend measured in each process (the worker's Meter: allocated bytes right after each
optimizer step, and the peak of the last step), not numel x element size, which equals 16 / N by construction. The
steps of a run are the pairs of the noise rule (ftkit.core.evidence): the same global batch in both runs at each step.
"""

from __future__ import annotations

from ftkit.chapters.scaling.sharded import OFFLOAD, bytes_per_param, largest_unit, loss_gap, measured, per_process, smallest_n
from ftkit.core.claims import Verdict, verdict
from ftkit.core.estimate import fits_on
from ftkit.core.evidence import paired
from ftkit.core.memory import human_bytes

COUNT_TOLERANCE = 0.01  # FSDP pads a tensor whose first dimension does not split evenly: allow 1 % over 1/N
LOSS_TOLERANCE = 1e-4  # fp32: the same sums in another order differ by ~1e-6; a wrong batch split moves loss by >1e-2
SHARD_TOLERANCE = 0.05  # each process keeps its own runtime whole (RUNTIME_BYTES): allow 5 % over 1/N
CHECKPOINT_TOLERANCE = 1e-5  # the gathered checkpoint's weights equal the single process's (fp32 round trip)
SIXTEEN_TOLERANCE = 0.05  # 16 ± 0.8 bytes per parameter: the runtime, and the allocator's rounding
RUNTIME_BYTES = 40 * 2**20  # what a process allocates besides the model (imports, the first step's buffers): 20-40 MB
MIN_STATE_BYTES = RUNTIME_BYTES / SIXTEEN_TOLERANCE  # smaller model states cannot tell the runtime from the model
NODE_GPUS = 8  # one node of the cluster claim: 8 GPUs


def sharding_holds(single: dict, sharded: dict, bucket: str = "weights") -> tuple[bool, str]:
    """Does every process of the sharded run COUNT 1/N of what the single process counts in one bucket (numel x element
    size, within 1 %)? True for any FSDP run by construction: the tests use it to see that FSDP sharded every bucket,
    the verdict measures (sharding_verdict)."""
    whole, n = per_process(single, bucket)[0], sharded["n_processes"]
    parts = per_process(sharded, bucket)
    worst = max(parts) / whole
    holds = n > 1 and worst <= (1 + COUNT_TOLERANCE) / n
    return holds, (f"{bucket}: one process holds {whole:,} bytes alone; with FSDP over {n} processes each holds "
                   f"{', '.join(f'{p:,}' for p in parts)} = {worst:.4f} of it (1/{n} = {1 / n:.4f})")


def too_small(single: dict) -> str | None:
    """Why the memory rules cannot decide on this run (model states smaller than MIN_STATE_BYTES), or None."""
    states = bytes_per_param(single) * single["n_params"]
    if states < MIN_STATE_BYTES:
        return (f"the model's states ({human_bytes(states)}) are too small beside what a process allocates besides "
                f"them (up to {human_bytes(RUNTIME_BYTES)}) to measure")
    return None


def sharding_verdict(single: dict, sharded: dict, tolerance: float = SHARD_TOLERANCE) -> Verdict:
    """4.sharding: right after each optimizer step every process of the sharded run holds at most (1 + tolerance)/N of
    the memory the single process holds (measured, above each process's memory before loading the model); the detail
    gives the last step's peak, which the count leaves out: the unit FSDP holds whole, gradients before their
    reduce-scatter, activations."""
    n, whole = sharded["n_processes"], measured(single)
    ratios = [max(measured(sharded, rank=r)[i] for r in range(n)) / whole[i] for i in range(len(whole))]
    limit = (1 + tolerance) / n
    reason = too_small(single)
    holds = None if reason else paired(ratios, [limit] * len(ratios)).below(0.0)  # the noise rule over the steps
    rank0, peak0, peak1 = measured(sharded), measured(sharded, "peak"), measured(single, "peak")
    unit = largest_unit(sharded)
    held = ("from the start of the forward to the end of the backward" if unit and "lm_head" in unit["modules"]
            else "while it computes")  # accelerate keeps the unit with the output layer gathered through the step
    left_out = "" if unit is None else (
        f"; it leaves out what a process holds whole for a while: FSDP's largest unit ({' + '.join(unit['modules'])}: "
        f"{human_bytes(unit['bytes'])}, {unit['params'] / single['n_params']:.0%} of the parameters) {held}, then its "
        "full gradient until the reduce-scatter, and the activations")
    noise = paired(ratios, [1 / n] * len(ratios)).describe("+.4f", over="steps")
    detail = ((f"{reason}; " if reason else "") +
              f"after the optimizer step each of {n} processes held at most {max(ratios):.3f} of one process's "
              f"allocated memory (rank 0 {human_bytes(rank0[-1])} of {human_bytes(whole[-1])}; over 1/{n}: {noise}; "
              f"limit {limit:.3f}); at the last step's peak {max(peak0) / max(peak1):.2f} "
              f"({human_bytes(max(peak0))} of {human_bytes(max(peak1))}), while the count of its shards says "
              f"{per_process(sharded, 'weights')[0] / per_process(single, 'weights')[0]:.3f}{left_out}")
    return verdict("4.sharding", holds, detail)


def loss_match_verdict(single: dict, sharded: dict, tolerance: float = LOSS_TOLERANCE) -> Verdict:
    """Does the sharded run's loss curve equal the single-process one (same global batch) within `tolerance`?"""
    gap = loss_gap(single, sharded)
    rows = sharded["per_process_bytes"]
    ranks = [row["losses"] for row in rows]
    spread = max(abs(a - b) for a, b in zip(ranks[0], ranks[-1])) if len(ranks) > 1 else 0.0
    naive = [sum(step) / len(step) for step in zip(*ranks)]  # each process's own mean, averaged: tokens ignored
    detail = (f"{len(single['losses'])} steps, largest loss difference {gap:.2e} (tolerance {tolerance:.0e}), while "
              f"the processes' own losses on their shares of each batch differ by up to {spread:.2e}")
    if "answer_tokens" in rows[0]:
        detail += (f"; they hold different numbers of answer tokens, and averaging their own means instead of "
                   f"dividing by the batch's tokens would be off by up to {max(abs(a - b) for a, b in zip(naive, single['losses'])):.2e}")
    return verdict("4.same-training", gap <= tolerance, detail)


def checkpoint_verdict(max_weight_diff: float, tolerance: float = CHECKPOINT_TOLERANCE) -> Verdict:
    """4.checkpoint: the gathered checkpoint (loaded with from_pretrained) equals the single-process model's weights."""
    return verdict("4.checkpoint", max_weight_diff <= tolerance,
                   f"from_pretrained loads the gathered folder; its weights differ from the single-process model's by "
                   f"at most {max_weight_diff:.1e} (tolerance {tolerance:.0e})")


def sixteen_bytes_verdict(single: dict, tolerance: float = SIXTEEN_TOLERANCE) -> Verdict:
    """4.16-bytes: full fine-tuning with AdamW holds about 16 bytes per parameter before activations (ZeRO paper,
    sec. 3.1), measured right after each optimizer step of the single process: within 16 (1 ± tolerance) by the noise
    rule over the steps."""
    n = single["n_params"]
    per_param = [b / n for b in measured(single)]
    band = 16 * tolerance
    reason = too_small(single)
    steps = paired(per_param, [16] * len(per_param))
    above, below = steps.above(-band), steps.below(band)
    holds = None if reason else False if False in (above, below) else True if above and below else None
    detail = ((f"{reason}; " if reason else "") +
              f"measured {sum(per_param) / len(per_param):.2f} bytes per parameter right after the optimizer step "
              f"(allocated above the process's memory before the model was loaded; over 16: "
              f"{steps.describe('+.2f', over='steps')}; band ±{band:.1f}), counted {bytes_per_param(single):.2f}: this "
              f"run is fp32, 4 + 4 + 8 (weights, gradients, AdamW's two moments), not the ZeRO paper's mixed-precision "
              f"2 + 2 + 12, and mixed precision adds a 16-bit copy of the weights being computed with; the last step's peak "
              f"reached {max(measured(single, 'peak')) / n:.2f}: activations and temporaries, which no count sees")
    return verdict("4.16-bytes", holds, detail)


def cluster_verdict(rows: list[dict], qlora_7b, gib_per_gpu: float, gpu: str = "80 GB",
                    bytes_per_param_measured: float = 16.0) -> Verdict:
    """4.cluster: without offload, full fine-tuning of a 70B model needs more than one node of NODE_GPUS GPUs (of
    `gib_per_gpu` usable GiB, a `gpu` card) even with ZeRO-3, at the bytes per parameter measured in the single
    process (sharding_table's ZeRO-3 rows are at 16, which ZeRO-3 divides by N); the detail gives the offload row
    (OFFLOAD's rows, when `rows` has them) and where QLoRA puts a 7B model (qlora_7b, its estimate)."""
    scale = bytes_per_param_measured / 16
    zero3 = [dict(r, gib=r["gib"] * scale) for r in rows if r["sharding"] == "zero3"]
    full_7b, full_70b = smallest_n(zero3, "7B", "zero3", gib_per_gpu), smallest_n(zero3, "70B", "zero3", gib_per_gpu)
    one_gpu = next((gpu for gpu, ok in fits_on(qlora_7b).items() if ok), "GPU of the list: none")
    offload = next((r for r in rows if r["model"] == "70B" and r["sharding"] == OFFLOAD
                    and r["n_devices"] == NODE_GPUS), None)
    offload_text = "" if offload is None else (
        f"; with the optimizer state offloaded to host RAM (ZeRO-Offload/Infinity, FSDP's CPU offload) its 12 bytes "
        f"per parameter ({offload['host_gib'] * 2**30 / 1e9:,.0f} GB for 70B) leave {offload['gib']:.0f} GiB on each "
        f"of {NODE_GPUS} GPUs: one node {'holds' if offload['gib'] <= gib_per_gpu else 'does not hold'} it, at the "
        "price of moving the states over PCIe every step")
    return verdict("4.cluster", full_70b is None or full_70b > NODE_GPUS,
                   f"without offload, full FT of 70B needs {full_70b} GPUs of {gpu} even with ZeRO-3 at the "
                   f"{bytes_per_param_measured:.2f} bytes per parameter measured here, more than one "
                   f"{NODE_GPUS}-GPU node, for its model states alone; 7B needs {full_7b}, 1B fits one GPU"
                   f"{offload_text}; QLoRA puts 7B on one {one_gpu}")
