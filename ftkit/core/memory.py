"""Training memory, measured on one real training step, and the random models and batches that measure it anywhere.

Four buckets, in bytes (ftkit.core.estimate predicts the same four from a model config):

- weights: every parameter and buffer, at its real dtype; for 4-bit (NF4) layers the packed
  uint8 storage plus the quantization constants (absmax, nested absmax, codebooks);
- gradients: `.grad` of the trainable parameters;
- optimizer: every tensor in the optimizer state (AdamW: two moments per trainable parameter);
- activations: tensors autograd saves during the forward for the backward pass.

`measure_memory` counts them on a real model.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass

import torch

from ftkit.core.configs import config_for
from ftkit.core.hparams import check_method, loading_settings
from ftkit.core.models import (
    autocast,
    cast_qlora_adapters,
    default_upcast,
    load_base,
    lora_config,
    torch_dtype,
    upcast_outside_linears,
)

OPTIMIZERS = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit")  # the Trainer's `optim` names
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

GB = 1024**3
MB = 1024**2


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass
class MemoryBreakdown:
    """Bytes of training memory by bucket; `peak_gpu` is torch.cuda.max_memory_allocated (CUDA only)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    peak_gpu: int | None = None

    @property
    def total(self) -> int:
        """Sum of the four buckets (not counting allocator overhead or temporaries)."""
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict:
        """Plain dict of the buckets plus `total`, in bytes."""
        return {**asdict(self), "total": self.total}

    def __str__(self) -> str:
        rows = [("weights", self.weights), ("gradients", self.gradients), ("optimizer", self.optimizer),
                ("activations", self.activations), ("total", self.total)]
        if self.peak_gpu is not None:
            rows.append(("peak_gpu", self.peak_gpu))
        return "\n".join(f"{name:<12} {human_bytes(n):>10}" for name, n in rows)


def human_bytes(n: float) -> str:
    """Bytes as a short string in MB or GB (binary units)."""
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.1f} MB"


# ---------------------------------------------------------------------------------------------
# Measured
# ---------------------------------------------------------------------------------------------


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements."""
    return t.numel() * t.element_size()


def quant_state_tensors(param) -> list[torch.Tensor]:
    """The tensors of a bitsandbytes 4-bit weight's quant_state (absmax, code, offset, nested state2)."""
    qs = getattr(param, "quant_state", None)
    if qs is None:
        return []
    out = [t for t in (qs.absmax, qs.code, qs.offset) if isinstance(t, torch.Tensor)]
    if getattr(qs, "state2", None) is not None:
        out += [t for t in (qs.state2.absmax, qs.state2.code) if isinstance(t, torch.Tensor)]
    return out


def _weight_tensors(model) -> list[torch.Tensor]:
    """Parameters, buffers and 4-bit quant-state tensors, each storage once."""
    seen, out = set(), []
    tensors = list(model.parameters()) + list(model.buffers())
    for p in model.parameters():
        tensors += quant_state_tensors(p)
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.dtype, t.numel())
        if t.numel() and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def weights_by_dtype(model) -> dict[str, int]:
    """Bytes of parameters + buffers + 4-bit quant state, by dtype name (e.g. {"uint8": ..., "float32": ...})."""
    out: dict[str, int] = {}
    for t in _weight_tensors(model):
        name = str(t.dtype).removeprefix("torch.")
        out[name] = out.get(name, 0) + tensor_bytes(t)
    return out


def param_bytes(model) -> int:
    """Bytes of all weights: parameters + buffers + 4-bit quant state."""
    return sum(weights_by_dtype(model).values())


def make_optimizer(params, name: str = "adamw_torch", lr: float = 1e-4):
    """AdamW by the Trainer's name: "adamw_torch" (torch, fused when possible), "adamw_8bit" / "paged_adamw_8bit" (bitsandbytes)."""
    params = list(params)
    if name == "adamw_torch":
        try:
            return torch.optim.AdamW(params, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(params, lr=lr)
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.AdamW8bit if name == "adamw_8bit" else bnb.optim.PagedAdamW8bit
        return cls(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def measure_step(model, batch: dict, profile, optimizer: str = "adamw_torch") -> MemoryBreakdown:
    """measure_memory on one batch, under the autocast training uses (bf16 on this CPU: fp32 master weights).
    Used by ftkit.compare and notebooks/01_methods/03_three_methods_side_by_side.ipynb."""
    with autocast(profile.precision, profile.device):
        return measure_memory(model, batch, optimizer=optimizer)


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def measure_memory(model, batch: dict, optimizer="adamw_torch", lr: float = 1e-4, steps: int = 1) -> MemoryBreakdown:
    """Run `steps` real training steps (forward, backward, optimizer.step) and count bytes on the last one.

    `batch` holds input_ids (and optionally attention_mask, labels; labels default to input_ids).
    `optimizer` is a name from OPTIMIZERS or a torch optimizer over the model's trainable parameters.
    The model is trained in place: its weights change by one (or `steps`) optimizer steps.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    batch.setdefault("labels", batch["input_ids"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trainable, optimizer, lr) if isinstance(optimizer, str) else optimizer
    weight_keys = {_storage_key(t) for t in _weight_tensors(model)}
    model.train()

    saved: dict[int, int] = {}

    def pack(t):
        key = _storage_key(t)
        if key not in weight_keys and key not in saved:
            saved[key] = t.untyped_storage().nbytes()
        return t

    for step in range(steps):
        last = step == steps - 1
        opt.zero_grad(set_to_none=True)
        if last:
            saved.clear()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**batch).loss
        if not last:
            saved.clear()
        loss.backward()
        opt.step()

    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    grads = sum(tensor_bytes(p.grad) for p in trainable if p.grad is not None)
    state_seen, state_bytes = set(), 0
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and v.numel() and _storage_key(v) not in state_seen:
                state_seen.add(_storage_key(v))
                state_bytes += tensor_bytes(v)
    return MemoryBreakdown(weights=param_bytes(model), gradients=grads, optimizer=state_bytes,
                           activations=sum(saved.values()), peak_gpu=peak)


# ---------------------------------------------------------------------------------------------
# Random-initialised models (for tests and the GPU check: no download needed)
# ---------------------------------------------------------------------------------------------


def random_model(config, method: str = "full", *, precision: str = "fp32", lora_r: int = 16,
                 target_modules="all-linear", double_quant: bool = True, device: str = "cpu", seed: int = 0,
                 upcast_frozen_to_fp32: bool | None = None):
    """A random-initialised causal LM of a config (see config_for) for `method`: full (all trainable, in
    `precision`), lora or qlora (the base as ftkit.load_base prepares it for training, plus peft adapters)."""
    from transformers import AutoModelForCausalLM

    check_method(method)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config_for(config), dtype=torch_dtype(precision))
    if method == "qlora":  # quantize the random weights exactly as a downloaded checkpoint would be
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            model = load_base(tmp, "qlora", precision=precision, device=device, double_quant=double_quant,
                              upcast_frozen_to_fp32=upcast_frozen_to_fp32)
    else:
        model = model.to(device)
        if method == "lora" and (default_upcast(precision) if upcast_frozen_to_fp32 is None else upcast_frozen_to_fp32):
            upcast_outside_linears(model)
    if method in ("lora", "qlora"):
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(loading_settings(method, None, {"lora_r": lora_r,
                                                                             "target_modules": target_modules})))
    if method == "qlora":
        cast_qlora_adapters(model, precision)  # as ftkit.load_model and TRL's SFTTrainer have them
    return model


def random_batch(vocab_size: int, seq_len: int, batch_size: int, seed: int = 0) -> dict:
    """A batch of random token ids (labels = input_ids)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "labels": ids.clone()}
