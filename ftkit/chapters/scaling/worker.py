"""Full fine-tuning with PyTorch FSDP, driven by accelerate: one script for 1 CPU process, 2 CPU processes, or N GPUs.

Chapter 4 (notebooks/04_scaling_out). Every process holds 1/N of the parameters, gradients and AdamW state
(FSDP "full shard" = ZeRO stage 3), trains on 1/N of each global batch, and rank 0 writes what it measured
(metrics.json) and the checkpoint gathered back into one normal model folder that `from_pretrained` loads.

    # 2 processes on this CPU (gloo), as CI runs it:
    accelerate launch --config_file ftkit/chapters/scaling/fsdp_cpu_2proc.yaml -m ftkit.chapters.scaling.worker --out runs/fsdp
    # the same global batch in one plain process (no FSDP), to compare the loss curves:
    python -m ftkit.chapters.scaling.worker --out runs/single
    # several GPUs on one machine (bf16), unchanged:
    accelerate launch --config_file configs/accelerate/fsdp_1node_gpus.yaml -m ftkit.chapters.scaling.worker --out runs/gpu

The data are the course's training conversations, packed into blocks of exactly --seq-len tokens: every process
then sees the same number of tokens, so the mean of the per-process losses is the loss of the whole global batch and
the sharded run is the single-process run computed in a different place.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    """Command-line options; the defaults are the CI sizes."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-random",
                   help="a built-in name (smollm2-135m, tiny-random), a hub id or a local model folder")
    p.add_argument("--data", help="a .pt file of packed token ids (n_blocks, seq_len), as ftkit.scaling.run_sharded "
                                  "writes it; default: pack the course data here (imports ftkit: slower to start)")
    p.add_argument("--out", required=True, help="folder for metrics.json and the gathered model (model/)")
    p.add_argument("--max-steps", type=int, default=4, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=4, help="GLOBAL batch: split evenly over the processes")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per packed training block")
    p.add_argument("--learning-rate", type=float, default=1e-4,
                   help="AdamW learning rate (constant; full FT of a small model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-save", action="store_true", help="skip gathering and saving the model")
    return p.parse_args(argv)


def make_accelerator():
    """An Accelerator for whatever launched us; FSDP on the CPU too.

    `accelerate launch` with an FSDP config starts the processes (torch.distributed.run) and sets
    ACCELERATE_USE_FSDP=true plus the FSDP_* settings. accelerate 1.15 turns FSDP on only for GPU-like
    distributed types (accelerate/state.py), so on a CPU it would silently fall back to plain data parallel
    (every process keeps the whole model). PyTorch FSDP itself runs on the CPU with gloo, so there we switch
    the state to FSDP with the plugin read from the same environment variables: the same code path as on GPUs.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wants_fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # both states: AcceleratorState copies PartialState's fields again when it is looked up later
        accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables
    return accelerator


def local_bytes(tensors) -> int:
    """Bytes this process really holds: for an FSDP-sharded tensor (a DTensor) its local shard only."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def full_bytes(tensors) -> int:
    """Bytes of the whole (unsharded) tensors, wherever they live."""
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_tensors(optimizer) -> list:
    """Every tensor in the optimizer's state (AdamW: exp_avg, exp_avg_sq; the step counts are tiny)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def save_plain(config, state_dict: dict, folder: Path) -> None:
    """Save a gathered state dict as a normal model folder (config.json + model.safetensors).

    Only rank 0 runs this. It rebuilds a plain, unsharded model from the config, because calling
    save_pretrained on the FSDP model itself from one process would wait forever for the others (its
    parameters are sharded DTensors, and reading them whole is a collective operation)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(state_dict, assign=True)  # raises if a key is missing or unexpected
    plain.tie_weights()
    plain.save_pretrained(folder)


def main(argv=None) -> None:
    args = parse_args(argv)
    from accelerate.utils import DistributedType, gather_object, set_seed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    accelerator = make_accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} is the global batch and must split evenly over "
                         f"{world} processes; use a multiple of {world}.")
    set_seed(args.seed)
    n_blocks = args.max_steps * args.batch_size
    if args.data:
        path, blocks = args.model, torch.load(args.data)
        if tuple(blocks.shape) != (n_blocks, args.seq_len):
            raise SystemExit(f"{args.data} holds {tuple(blocks.shape)} token ids; this run needs ({n_blocks}, "
                             f"{args.seq_len}) = (steps x batch size, seq len)")
    else:  # standalone: the course data packed here, the model by its ftkit name (imports ftkit: slower to start)
        from ftkit.chapters.scaling.sharded import packed_blocks
        from ftkit.core.builtin import model_path

        path = args.model if Path(args.model).is_dir() else model_path(args.model)
        blocks = packed_blocks(path, args.seq_len, n_blocks, args.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    buffers = full_bytes(model.buffers())  # rotary frequencies: FSDP leaves buffers whole on every process
    unsharded = {"parameters": full_bytes(model.parameters()), "buffers": buffers}
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)  # FSDP: each process keeps 1/world of every tensor
    sharding = accelerator.distributed_type == DistributedType.FSDP
    sharded = {"parameters": local_bytes(model.parameters()), "buffers": buffers}
    sharded["weights"], unsharded["weights"] = sharded["parameters"] + buffers, unsharded["parameters"] + buffers

    per_rank = args.batch_size // world
    losses, my_losses, step_times = [], [], []
    model.train()
    for step in range(args.max_steps):
        start = time.perf_counter()
        batch = blocks[step * args.batch_size:(step + 1) * args.batch_size]  # the global batch of this step
        mine = batch[rank * per_rank:(rank + 1) * per_rank].to(accelerator.device)  # this process's share
        loss = model(input_ids=mine, labels=mine).loss
        accelerator.backward(loss)  # FSDP reduce-scatters: each process gets the mean gradient of its shard
        if step == 0:
            sharded["gradients"] = local_bytes(p.grad for p in model.parameters() if p.grad is not None)
            unsharded["gradients"] = full_bytes(p.grad for p in model.parameters() if p.grad is not None)
        optimizer.step()
        if step == 0:
            sharded["optimizer"] = local_bytes(optimizer_tensors(optimizer))
            unsharded["optimizer"] = full_bytes(optimizer_tensors(optimizer))
        optimizer.zero_grad(set_to_none=True)
        # equal tokens per process, so the mean of the per-process means is the global batch's loss
        my_losses.append(loss.item())
        losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
        step_times.append(time.perf_counter() - start)
        accelerator.print(f"step {step + 1}/{args.max_steps}  loss {losses[-1]:.4f}  {step_times[-1]:.1f} s", flush=True)

    per_process = gather_object([{"rank": rank, **sharded, "losses": my_losses}])
    out = Path(args.out)
    saved = None
    if not args.no_save:
        state_dict = accelerator.get_state_dict(model)  # gathered in full on rank 0 (FULL_STATE_DICT)
        if accelerator.is_main_process:
            saved = out / "model"
            save_plain(accelerator.unwrap_model(model).config, state_dict, saved)
            AutoTokenizer.from_pretrained(path).save_pretrained(saved)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        metrics = {
            "model": args.model, "n_processes": world, "distributed_type": str(accelerator.distributed_type.value),
            "fsdp_version": accelerator.state.fsdp_plugin.fsdp_version if sharding else None,
            "device": str(accelerator.device), "n_params": n_params, "max_steps": args.max_steps,
            "global_batch": args.batch_size, "seq_len": args.seq_len, "learning_rate": args.learning_rate, "losses": losses,
            "step_times_s": step_times, "unsharded_bytes": unsharded,
            "per_process_bytes": sorted(per_process, key=lambda r: r["rank"]),
            "checkpoint": str(saved) if saved else None, "torch": torch.__version__,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
