"""Emulate a Colab T4 on a bigger CUDA GPU and measure the capstone's QLoRA recipe: peak memory, speed, T4 time.

What it emulates: memory capped at the T4's usable 14.75 GiB (torch.cuda.set_per_process_memory_fraction), fp16
compute, no FlashAttention-2 (sdpa attention, transformers' default), the capstone's exact architecture
(random-initialised from its public config in ftkit.KNOWN_CONFIGS: values don't change bytes or FLOPs), saved
in fp16 once and loaded in NF4 through ftkit.load_model (the notebook's loading path), trained with exactly
ftkit.capstone.capstone_recipe's settings on full-length random token batches (the worst case of the course's batches).
In the same run it measures the plain Hugging Face defaults (no gradient checkpointing, fp32 compute, torch AdamW) on
the same model, which may not fit under the cap. Needs no network: torch, transformers, peft, bitsandbytes.

    python scripts/t4_emulation.py                 # on a CUDA GPU: writes results/t4_emulation.json
    python scripts/t4_emulation.py --smoke --out /tmp/x.json   # the same code on the CPU, tiny model, 2 steps
"""

import argparse
import dataclasses
import datetime
import gc
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T4_FP16_TFLOPS = 65.0  # T4 fp16 tensor cores (FINDINGS §6)
# Dense fp16 tensor-core TFLOP/s (no sparsity) of GPUs this may run on, from the vendors' data sheets.
GPU_FP16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                   "V100": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "T4": 65.0}
LIMIT_GIB = 14.0  # the capstone's default must stay under this, leaving room for the CUDA context


def parse_args(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "t4_emulation.json"), help="JSON output path")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per recipe (after 2 warm-up steps)")
    p.add_argument("--model", default=None, help="default: the t4 profile's capstone model")
    p.add_argument("--gpu-tflops", type=float, default=None, help="this GPU's dense fp16 TFLOP/s, if not in the table")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny-random model, 2 steps, no cap (for the tests)")
    return p.parse_args(argv)


def measure(folder: str, hp, profile, *, device: str, steps: int, vocab: int) -> dict:
    """Load the checkpoint in NF4 with hp at the profile's precision and sequence length and time `steps` training
    steps: peak memory, tokens/s."""
    import torch

    import ftkit
    from ftkit.core.memory import make_optimizer, random_batch
    from ftkit.core.train import PeakMemory

    precision, batch, seq = profile.precision, hp.batch_size, profile.max_seq_len
    model = None
    try:
        with PeakMemory(device) as peak:
            model, _ = ftkit.load_model(folder, "qlora", precision=precision, device=device, lora_r=hp.lora_r,
                                        lora_alpha=hp.alpha, lora_dropout=hp.lora_dropout, use_rslora=hp.use_rslora,
                                        target_modules=hp.target_modules,
                                        gradient_checkpointing=hp.gradient_checkpointing)
            model.train()
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = make_optimizer(trainable, hp.optim, hp.learning_rate)
            scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
            start = 0.0
            for step in range(steps + 2):
                if step == 2:  # two warm-up steps (kernels, allocator) are not timed
                    if device == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                ids = random_batch(vocab, seq, batch, seed=step)
                ids = {k: v.to(device) for k, v in ids.items()}
                with ftkit.autocast(precision, device):  # what the Trainer's fp16=/bf16= flags do
                    loss = model(**ids).loss
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        return {"fits": True, "peak_bytes": peak.peak, "peak_gib": peak.peak / 2**30, "peak_kind": peak.kind,
                "s_per_step": elapsed / steps, "tokens_per_s": steps * batch * seq / elapsed,
                "final_loss": float(loss.detach()), "note": ""}
    except torch.OutOfMemoryError as err:
        return {"fits": False, "note": "does not fit in 14.75 GiB", "error": str(err).splitlines()[0][:300]}
    finally:
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import ftkit
    from ftkit.chapters import capstone as colab
    from ftkit.tools.doctor import measured_with
    from ftkit.core.builtin import random_weights_dir

    if not args.smoke and not torch.cuda.is_available():
        print("t4_emulation.py needs a CUDA GPU (it measures GPU memory and speed). "
              "Use --smoke to run the same code on the CPU with a tiny model.")
        return 2
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        profile = dataclasses.replace(ftkit.get_profile("ci"), max_steps=2, batch_size=2, max_seq_len=32)
        model_name, steps = "tiny-random", 2
    else:
        profile = dataclasses.replace(ftkit.PROFILES["t4"])  # a T4's settings, whatever GPU runs this
        model_name, steps = args.model or profile.capstone_model, args.steps
    hp = colab.capstone_recipe(profile)
    if args.smoke:
        hp = dataclasses.replace(hp, optim="adamw_torch")  # paged 8-bit AdamW needs CUDA
    default_hp = dataclasses.replace(hp, gradient_checkpointing=False, optim="adamw_torch")
    default_profile = dataclasses.replace(profile, precision="fp32")
    recipe = {**hp.as_dict(), "precision": profile.precision, "max_seq_len": profile.max_seq_len}
    default = {**default_hp.as_dict(), "precision": default_profile.precision, "max_seq_len": profile.max_seq_len}
    config_name = ftkit.config_name(model_name)
    vocab = ftkit.model_shape(config_name).vocab
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'unknown'})"
    print(f"emulating a T4 on {gpu}: model {model_name}, recipe {recipe}")

    # the real architecture with random weights, saved once like a hub checkpoint (shared with the capstone notebook
    # when scripts/gpu_check.py runs both); the smoke run's tiny model is random already
    folder = ftkit.model_path("tiny-random") if args.smoke else str(random_weights_dir(model_name))
    if device == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, colab.T4_GIB * 2**30 / total))
        print(f"memory capped at {colab.T4_GIB} GiB of {total / 2**30:.1f} GiB")
    capstone = measure(folder, hp, profile, device=device, steps=steps, vocab=vocab)
    hf_default = measure(folder, default_hp, default_profile, device=device, steps=steps, vocab=vocab)

    tflops = args.gpu_tflops or next((v for k, v in GPU_FP16_TFLOPS.items() if k in gpu), None)
    t4_estimate = {"minutes": None, "assumption": "unknown GPU: pass --gpu-tflops to estimate the T4 time"}
    if capstone["fits"] and tflops and device == "cuda":
        scale = tflops / T4_FP16_TFLOPS
        t4_estimate = {"minutes": capstone["s_per_step"] * scale * profile.max_steps / 60,
                       "assumption": f"ESTIMATE: time per step x ({tflops:g} / {T4_FP16_TFLOPS:g}) dense fp16 TFLOP/s "
                                     f"(this GPU / T4), x {profile.max_steps} steps; full-length batches"}
    ratios = {}
    if capstone["fits"] and hf_default["fits"]:
        ratios = {"memory": capstone["peak_bytes"] / hf_default["peak_bytes"],
                  "speed": capstone["tokens_per_s"] / hf_default["tokens_per_s"]}
    out = {"gpu": gpu, "date": datetime.date.today().isoformat(), "versions": measured_with(),
           "smoke": args.smoke, "model": model_name, "architecture": config_name, "cap_gib": None if args.smoke else colab.T4_GIB,
           "steps_timed": steps, "recipe": recipe, "capstone": capstone, "hf_default_recipe": default,
           "hf_default": hf_default, "ratios": ratios, "t4_estimate": t4_estimate}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))

    for label, r in (("capstone recipe", capstone), ("HF defaults", hf_default)):
        print(f"{label:16} " + (f"peak {r['peak_gib']:.2f} GiB ({r['peak_kind']}), {r['tokens_per_s']:.0f} tokens/s"
                                if r["fits"] else r["note"]))
    if ratios:
        print(f"capstone / defaults: memory x{ratios['memory']:.2f}, speed x{ratios['speed']:.2f}")
    print(f"T4 training time for {profile.max_steps} steps: "
          + (f"~{t4_estimate['minutes']:.0f} min" if t4_estimate["minutes"] else "not estimated")
          + f" [{t4_estimate['assumption']}]")
    print(f"wrote {args.out}")
    if not capstone["fits"] or (device == "cuda" and capstone["peak_gib"] > LIMIT_GIB):
        print(f"FAIL: the capstone recipe must stay under {LIMIT_GIB} GiB on a T4: "
              + (capstone["note"] if not capstone["fits"] else f"it peaked at {capstone['peak_gib']:.2f} GiB"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
