"""LoRA from scratch: a frozen linear layer plus a trainable low-rank update, checked against peft.

Used in notebooks/01_methods/01_lora_from_scratch.ipynb, which writes out LoRALinear (the same text as here:
tests/test_notebooks.py checks it) and trains its own copy, so that a learner can edit it there.

A linear layer computes y = W x + b with W of shape (d_out, d_in). LoRA freezes W and learns the update as
a product of two thin matrices, B (d_out x r) and A (r x d_in), with r much smaller than d_in and d_out:

    y = W x + b + (alpha / r) * B A x

B starts at zero, so at step 0 the model is exactly the pretrained one; only A and B are trained,
r * (d_in + d_out) numbers instead of d_in * d_out.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ftkit.core.configs import LINEAR_NAMES


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus the low-rank update (alpha / r) * B A."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer (typical: 8, 16, 32, 64), not {r!r}")
        if alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive (rule of thumb: alpha = r or 2 r), not {alpha!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), not {dropout!r}")
        self.base = base
        self.base.requires_grad_(False)  # W and b stay as pretrained
        self.r, self.alpha = r, alpha
        # The LoRA paper's scale. It does not make the learning rate rank-independent: with alpha / r higher ranks learn
        # more slowly (rsLoRA, Kalajdzievski 2023, uses alpha / sqrt(r)); chapter 2 measures the rate against r.
        self.scaling = alpha / r
        weight = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # peft's (and nn.Linear's) default init for A
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x @ A.T is (..., r): the input squeezed through the rank-r bottleneck, then B brings it back to d_out.
        return self.base(x) + (self.dropout(x) @ self.A.T @ self.B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain nn.Linear with W + (alpha / r) B A: same outputs, no extra matmuls at inference."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           dtype=self.base.weight.dtype, device=self.base.weight.device)
        merged.weight.copy_(self.base.weight + self.scaling * (self.B @ self.A))
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


def lora_param_count(d_in: int, d_out: int, r: int) -> int:
    """Trainable numbers LoRA adds to one d_in -> d_out layer: A has r*d_in, B has d_out*r.
    Used in notebooks/01_methods/01_lora_from_scratch.ipynb."""
    return r * (d_in + d_out)


def add_lora(model: nn.Module, r: int, alpha: float, target_modules=LINEAR_NAMES, dropout: float = 0.0,
             wrapper: type[nn.Module] = LoRALinear) -> nn.Module:
    """Freeze every parameter, then wrap each targeted nn.Linear in a LoRALinear (in place; returns model).
    wrapper: the class that wraps, called as wrapper(linear, r, alpha, dropout); notebook 1.1 passes the copy of
    LoRALinear it writes out, so that a learner's edit of it is what trains. Used in that notebook."""
    model.requires_grad_(False)
    targets = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in target_modules]
    if not targets:
        raise ValueError(f"No nn.Linear named one of {tuple(target_modules)} in this model")
    for name in targets:  # replace after the walk: changing modules while iterating over them is unsafe
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, wrapper(getattr(parent, child), r, alpha, dropout))
    return model


@torch.no_grad()
def copy_to_peft(ours: nn.Module, peft_model: nn.Module, adapter: str = "default") -> int:
    """Copy our A and B into peft's lora_A / lora_B weights (a whole model or one layer); returns layers copied.
    Used in notebooks/01_methods/01_lora_from_scratch.ipynb."""
    copied = 0
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or adapter not in module.lora_A:
            continue
        # peft wraps the model twice: PeftModel.base_model (LoraModel) .model (ours); strip that prefix.
        our_name = name.removeprefix("base_model.model.").removeprefix("base_model.model")
        layer = ours.get_submodule(our_name)
        if not (hasattr(layer, "A") and hasattr(layer, "B")):  # ours, or the notebook's copy of it
            raise ValueError(f"{our_name or 'the layer'} has no LoRALinear to copy from")
        if module.scaling[adapter] != layer.scaling:
            raise ValueError(f"{our_name}: peft scales by {module.scaling[adapter]}, ours by {layer.scaling}")
        module.lora_A[adapter].weight.copy_(layer.A)  # (r, d_in), same layout as ours
        module.lora_B[adapter].weight.copy_(layer.B)  # (d_out, r)
        copied += 1
    return copied


@torch.no_grad()
def time_forward(module: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Median seconds of one forward pass (after one warm-up call), without autograd.
    Used in notebooks/01_methods/01_lora_from_scratch.ipynb."""

    def synchronize():  # GPU kernels run asynchronously: wait for them, or the clock stops too early
        if x.is_cuda:
            torch.cuda.synchronize()

    module(x)
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        module(x)
        synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
