"""A Colab T4 emulated on the CPU: the `t4` profile's code paths without a GPU, so that CI sees what would break there.

Used by `make test`'s emulation lane: FTKIT_EMULATE=t4 with a CPU profile (ci) gives that profile's sizes with a T4's
precision. What is real: fp16 autocast (what the Trainer's fp16=True does on a GPU), a GradScaler that scales the loss
and unscales every gradient before the optimizer step, the 4-bit NF4 path of bitsandbytes, and a model of another
shape than the built-in one (the t4 profile trains SmolLM2-360M: 32 layers, not 30). What only CUDA has is replaced
by stand-ins, each said where it acts:

- the GradScaler's unscale refuses the dtypes CUDA's kernel refuses (it is compiled for fp32, fp64 and fp16 only:
  AT_DISPATCH_FLOATING_TYPES_AND_HALF in aten/src/ATen/native/cuda/AmpKernels.cu); the CPU kernel would accept bf16;
- bitsandbytes' paged and 8-bit optimizers (CUDA kernels): torch's AdamW, as ftkit.colab.capstone_recipe picks off CUDA;
- the GPU's memory: a T4's 14.75 GiB as the memory budget of the capstone's plan; peaks are the process's RSS.
"""

from __future__ import annotations

import os

EMULATE_ENV = "FTKIT_EMULATE"
EMULATIONS = ("t4",)
SECOND_SHAPE = "smollm2-135m-12l"  # the emulated T4 trains a model of another shape than the built-in one
CUDA_UNSCALE_DTYPES = ("float32", "float64", "float16")  # what CUDA's _amp_foreach_non_finite_check_and_unscale_ takes


def emulating() -> str | None:
    """The GPU being emulated ("t4"), from $FTKIT_EMULATE, or None."""
    name = os.environ.get(EMULATE_ENV) or None
    if name is not None and name not in EMULATIONS:
        raise ValueError(f"{EMULATE_ENV}={name!r} is not an emulation; choose one of {', '.join(EMULATIONS)} or unset it")
    return name


def emulated(profile):
    """A CPU profile's sizes with a T4's precision and a second model shape; installs the CUDA dtype rule once."""
    from dataclasses import replace

    if profile.device != "cpu":
        raise ValueError(f"{EMULATE_ENV}=t4 emulates a T4 on the CPU; profile {profile.name!r} already runs on "
                         f"{profile.device}: unset {EMULATE_ENV}")
    install_cuda_unscale_rule()
    return replace(profile, precision="fp16", model=SECOND_SHAPE, capstone_model=SECOND_SHAPE, emulating="t4")


def install_cuda_unscale_rule() -> None:
    """Make torch's unscale refuse, as CUDA's kernel does, gradients that are not fp32, fp64 or fp16 (idempotent)."""
    import torch

    original = torch._amp_foreach_non_finite_check_and_unscale_
    if getattr(original, "ftkit_cuda_rule", False):
        return

    def unscale(grads, found_inf, inv_scale):
        for g in grads:
            if str(g.dtype).removeprefix("torch.") not in CUDA_UNSCALE_DTYPES:
                raise NotImplementedError(f'"_amp_foreach_non_finite_check_and_unscale_cuda" not implemented for '
                                          f"'{_cuda_name(g.dtype)}' (ftkit's T4 emulation: CUDA's kernel takes fp32, "
                                          "fp64 and fp16 gradients only)")
        return original(grads, found_inf, inv_scale)

    unscale.ftkit_cuda_rule = True
    torch._amp_foreach_non_finite_check_and_unscale_ = unscale


def _cuda_name(dtype) -> str:
    return {"bfloat16": "BFloat16"}.get(str(dtype).removeprefix("torch."), str(dtype))


def attach_grad_scaler(trainer) -> None:
    """Give a CPU trainer with fp16=True what a GPU's has: fp16 autocast around each forward and a GradScaler (the
    Trainer builds neither on the CPU). Call after the trainer is built, before train()."""
    import torch

    accelerator = trainer.accelerator
    if trainer.args.fp16 and accelerator.device.type == "cpu" and accelerator.scaler is None:
        accelerator.native_amp = True  # accelerate's autocast(): torch.autocast("cpu", dtype=torch.float16)
        accelerator.scaler = torch.amp.GradScaler("cpu")  # scale the loss, unscale the gradients (under the CUDA rule)
