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

It trains as the course's Trainer does (ftkit.core.train.build_trainer, TRL's SFTTrainer): one conversation per row,
padded, the loss on the assistant's answer only, gradients clipped to norm 1.0 (the Trainer's default, and the
DeepSpeed config's `gradient_clipping`), AdamW as one fused kernel (the Trainer's adamw_torch_fused), the rate on a
schedule with optional warmup (the course's default: cosine, none). Where it differs: no evaluation, no early stopping.

The processes see different numbers of answer tokens, so each divides its summed loss by the answer tokens of the
whole global batch, and multiplies it by N because FSDP averages the gradients over the processes (transformers'
Trainer does the same, `average_tokens_across_devices`): the gradient each process applies is then the gradient of the
global batch's mean loss, the single-process run computed in another place.

Memory is reported twice per process: counted (numel x element size of the tensors it keeps between steps, its shards
under FSDP) and measured by the backend (the Meter): the bytes the allocator has handed out (torch's on a GPU, glibc
malloc's on the CPU) and the resident set size, before and right after the optimizer step of every step, and at the
peak of the last step, whose course over time is kept too. The count cannot see what a step holds for a while and
frees: the all-gathered unit, the unsharded gradients before their reduce-scatter, the activations; the measurement can.
"""

import argparse
import json
import math
import os
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

SAMPLE_S = 0.005  # the CPU meter's interval in the step it watches: each mallinfo2 call walks malloc's free lists
# (~0.5 ms in a fragmented heap, holding its locks), so sampling every step at 1 ms made the steps ~50 % slower; what
# this run holds for a while (a gathered unit, a gradient before its reduce-scatter) lasts tens of ms or more


def parse_args(argv=None):
    """Command-line options; the defaults are the course's settings for full fine-tuning, at CI sizes."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-random",
                   help="a built-in name (smollm2-135m, tiny-random), a hub id or a local model folder")
    p.add_argument("--data", help="a .pt file of padded rows {input_ids, attention_mask, labels}, as "
                                  "ftkit.scaling.run_sharded writes it; default: the course data, tokenized here "
                                  "(imports ftkit: slower to start)")
    p.add_argument("--out", required=True, help="folder for metrics.json and the gathered model (model/)")
    p.add_argument("--max-steps", type=int, default=4, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=4, help="GLOBAL batch: split evenly over the processes")
    p.add_argument("--max-seq-len", type=int, default=128, help="a longer conversation is cut (course rows: ~100)")
    p.add_argument("--learning-rate", type=float, default=1e-5,
                   help="AdamW's peak rate (the course's default for full FT, ftkit.core.hparams)")
    p.add_argument("--lr-scheduler", default="cosine", choices=SCHEDULES, help="the rate after warmup (course: cosine)")
    p.add_argument("--warmup-steps", type=int, default=0, help="steps over which the rate rises from 0 (course: 0)")
    p.add_argument("--max-grad-norm", type=float, default=1.0,
                   help="clip the global gradient norm (the Trainer's default; 0: no clipping). Under DeepSpeed the "
                        "config's gradient_clipping clips and must be the same")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-save", action="store_true", help="skip gathering and saving the model")
    return p.parse_args(argv)


SCHEDULES = ("cosine", "linear", "constant")  # the Trainer's names, as ftkit.core.hparams uses them


def lr_factor(name: str, warmup: int, total: int):
    """The factor on the peak rate at each optimizer step: transformers' get_scheduler(name) written out, because
    importing it (transformers.optimization) costs every process ~4 s. Linear warmup, then down to 0 by `total`
    (linear, or half a cosine); "constant" is 1 throughout, warmup or not, as transformers has it."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")

    def factor(step: int) -> float:
        if name == "constant":
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


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


class Meter:
    """The memory this process holds, in bytes, measured two ways. "allocated": what the allocator has handed out and
    not taken back, as the backend reports it: torch's CUDA allocator on a GPU, glibc's malloc (mallinfo2) on a Linux
    CPU, and where neither reports it the RSS again. "rss": the resident set size the kernel reports, which also counts
    memory the C allocator keeps after a free (it grows with fragmentation, step after step). `watch()` gives the peaks
    of a block of code: CUDA keeps its own; on the CPU a thread samples every SAMPLE_S seconds."""

    def __init__(self, cuda: bool):
        import psutil  # a dependency of accelerate

        self.cuda, self._process, self._mallinfo = cuda, psutil.Process(), None if cuda else glibc_mallinfo2()
        self.kind = {"allocated": "torch.cuda.memory_allocated" if cuda else
                     "glibc mallinfo2 (uordblks + hblkhd)" if self._mallinfo else "RSS (no allocator report here)",
                     "rss": "resident set size (psutil)",
                     "peak": "torch.cuda.max_memory_allocated" if cuda else f"sampled every {SAMPLE_S * 1000:g} ms"}

    def now(self) -> dict:
        rss = self._process.memory_info().rss
        if self.cuda:
            torch.cuda.synchronize()
            return {"allocated": torch.cuda.memory_allocated(), "rss": rss}
        if self._mallinfo:
            info = self._mallinfo()
            return {"allocated": info.uordblks + info.hblkhd, "rss": rss}  # in use in the heaps + in mmapped chunks
        return {"allocated": rss, "rss": rss}

    @contextmanager
    def watch(self):
        """Yields a dict whose values are, once the block has run, the most this process held during it, and "trace":
        [seconds since the block began, allocated bytes] of every sample (on the CPU a thread samples every SAMPLE_S
        seconds; CUDA keeps the peak itself)."""
        seen, began, samples = self.now(), time.perf_counter(), []

        def sample():
            reading = self.now()
            for key, value in reading.items():
                seen[key] = max(seen[key], value)
            samples.append([round(time.perf_counter() - began, 4), reading["allocated"]])

        stop = threading.Event()

        def loop():
            while not stop.is_set():
                sample()
                stop.wait(SAMPLE_S)

        thread = None if self.cuda else threading.Thread(target=loop, daemon=True)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            thread.start()
        try:
            yield seen
        finally:
            stop.set()
            if thread is not None:
                thread.join()
            sample()
            if self.cuda:
                seen["allocated"] = max(seen["allocated"], torch.cuda.max_memory_allocated())
            seen["trace"] = samples


def glibc_mallinfo2():
    """glibc's mallinfo2() through ctypes (glibc >= 2.33: the bytes malloc has handed out), or None elsewhere."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = MallInfo2
    return function


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


def fsdp_units(model) -> list[dict]:
    """The units FSDP all-gathers, one dict each: the modules that share it, its parameters and their bytes whole.
    A unit exists whole on every process while it computes (the tied embedding of a small model: from the start of
    the forward to the end of the backward), which is what a count of the shards leaves out."""
    from torch.distributed.fsdp import FSDPModule

    units, claimed = {}, set()
    for name, module in reversed(list(model.named_modules())):  # children first: a unit owns what no child unit owns
        if not isinstance(module, FSDPModule):
            continue
        state = module._get_fsdp_state()
        unit = units.setdefault(id(state), {"modules": [], "params": 0, "bytes": 0})
        unit["modules"].append(name or "(root)")
        for p in module.parameters():
            if id(p) not in claimed:
                claimed.add(id(p))
                unit["params"] += p.numel()
                unit["bytes"] += p.numel() * p.element_size()
    return [u for u in units.values() if u["params"]]


def load_rows(args, n_rows: int) -> tuple[str, dict]:
    """The model's path and the run's rows {input_ids, attention_mask, labels}, each (n_rows, length)."""
    if args.data:
        rows = torch.load(args.data)
        if rows["input_ids"].shape[0] != n_rows:
            raise SystemExit(f"{args.data} holds {rows['input_ids'].shape[0]} rows; this run needs {n_rows} "
                             "(steps x batch size)")
        return args.model, rows
    # standalone: the course data tokenized here, the model by its ftkit name (imports ftkit: slower to start)
    from ftkit.chapters.scaling.sharded import course_rows
    from ftkit.core.builtin import model_path

    path = args.model if Path(args.model).is_dir() else model_path(args.model)
    return path, course_rows(path, n_rows, args.max_seq_len, args.seed)


def check_clipping(accelerator, max_grad_norm: float) -> None:
    """Under DeepSpeed the engine clips with its config's gradient_clipping: refuse a run where it is not ours."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        theirs = accelerator.state.deepspeed_plugin.deepspeed_config.get("gradient_clipping", 0) or 0
        if theirs != "auto" and float(theirs) != max_grad_norm:
            raise SystemExit(f"the DeepSpeed config clips at {theirs}, --max-grad-norm says {max_grad_norm}: make "
                             "them equal, or the two paths are not the same training")


def record(memory: dict, moment: str, values: dict) -> None:
    """Append one reading ({"allocated": bytes, "rss": bytes}) to memory[kind][moment]."""
    for key in ("allocated", "rss"):
        memory[key][moment].append(values[key])


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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    accelerator = make_accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} is the global batch and must split evenly over "
                         f"{world} processes; use a multiple of {world}.")
    check_clipping(accelerator, args.max_grad_norm)
    set_seed(args.seed)
    path, rows = load_rows(args, args.max_steps * args.batch_size)
    meter = Meter(accelerator.device.type == "cuda")
    with torch.device("meta"):  # import the model's code first: its Python objects are not the model's memory
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    baseline = meter.now()  # before the model exists: what the step measurements are taken above
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    buffers = full_bytes(model.buffers())  # rotary frequencies: FSDP leaves buffers whole on every process
    unsharded = {"parameters": full_bytes(model.parameters()), "buffers": buffers}
    # fused: one kernel, as the course's Trainer runs AdamW (adamw_torch_fused); it also makes no temporaries
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0, fused=True)
    # the schedule steps once per optimizer step; given to prepare, accelerate would step it once per process
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(args.lr_scheduler, args.warmup_steps,
                                                                       args.max_steps))
    model, optimizer = accelerator.prepare(model, optimizer)  # FSDP: each process keeps 1/world of every tensor
    sharding = accelerator.distributed_type == DistributedType.FSDP
    units = fsdp_units(model) if sharding else []
    sharded = {"parameters": local_bytes(model.parameters()), "buffers": buffers}
    sharded["weights"], unsharded["weights"] = sharded["parameters"] + buffers, unsharded["parameters"] + buffers

    per_rank = args.batch_size // world
    losses, my_losses, my_tokens, grad_norms, rates, step_times = [], [], [], [], [], []
    memory = {key: {"start": value, "before": [], "peak": [], "after_update": []} for key, value in baseline.items()}
    model.train()
    for step in range(args.max_steps):
        start = time.perf_counter()
        batch = {k: v[step * args.batch_size:(step + 1) * args.batch_size] for k, v in rows.items()}  # global batch
        answer_tokens = int((batch["labels"][:, 1:] != -100).sum())  # what the loss averages over: the whole batch's
        mine = {k: v[rank * per_rank:(rank + 1) * per_rank].to(accelerator.device) for k, v in batch.items()}
        rates.append(scheduler.get_last_lr()[0])
        record(memory, "before", meter.now())
        last, marks = step == args.max_steps - 1, {}
        with meter.watch() if last else nullcontext() as seen:  # the last step: its peak, and its memory over time
            began = time.perf_counter()
            loss = model(**mine, num_items_in_batch=answer_tokens).loss  # this process's answer-token losses / all
            marks["forward"] = time.perf_counter() - began
            accelerator.backward(loss * world)  # FSDP averages over processes: x world makes it the global gradient
            marks["backward"] = time.perf_counter() - began
            norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm) if args.max_grad_norm else None
            marks["clipping"] = time.perf_counter() - began
            optimizer.step()
            marks["AdamW"] = time.perf_counter() - began
            record(memory, "after_update", meter.now())  # weights, gradients and AdamW state all alive here
        if last:
            record(memory, "peak", seen)
            memory["trace"] = {"samples": seen["trace"], "phases_end_s": marks}
        if step == 0:
            sharded["gradients"] = local_bytes(p.grad for p in model.parameters() if p.grad is not None)
            unsharded["gradients"] = full_bytes(p.grad for p in model.parameters() if p.grad is not None)
            sharded["optimizer"] = local_bytes(optimizer_tensors(optimizer))
            unsharded["optimizer"] = full_bytes(optimizer_tensors(optimizer))
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        mine_tokens = int((mine["labels"][:, 1:] != -100).sum())
        my_tokens.append(mine_tokens)
        my_losses.append(loss.item() * answer_tokens / max(mine_tokens, 1))  # this process's own mean
        losses.append(accelerator.reduce(loss.detach(), reduction="sum").item())  # the global batch's mean
        grad_norms.append(None if norm is None else float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
        step_times.append(time.perf_counter() - start)
        accelerator.print(f"step {step + 1}/{args.max_steps}  loss {losses[-1]:.4f}  {step_times[-1]:.1f} s", flush=True)

    per_process = gather_object([{"rank": rank, **sharded, "losses": my_losses, "answer_tokens": my_tokens,
                                  "memory": memory}])
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
            "global_batch": args.batch_size, "row_length": int(rows["input_ids"].shape[1]),
            "learning_rate": args.learning_rate, "lr_scheduler": args.lr_scheduler, "warmup_steps": args.warmup_steps,
            "max_grad_norm": args.max_grad_norm, "losses": losses, "learning_rates": rates, "grad_norms": grad_norms,
            "step_times_s": step_times, "memory_meter": meter.kind, "unsharded_bytes": unsharded,
            "fsdp_units": units, "per_process_bytes": sorted(per_process, key=lambda r: r["rank"]),
            "checkpoint": str(saved) if saved else None, "torch": torch.__version__,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
