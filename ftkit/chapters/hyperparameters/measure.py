"""Chapter 2's measurements that need no sweep: gradient noise against batch size, the untrained model's validation
loss, and batch B against (B/k) x k gradient accumulation.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from transformers import set_seed

from ftkit.core.data import profile_dataset
from ftkit.core.models import autocast, load_model
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.memory import make_optimizer
from ftkit.core.train import eval_loss, run_experiment, training_step


def warm_up(model, batches: list[dict], *, precision: str = "fp32", lr: float = 2e-4) -> list[float]:
    """A few real AdamW steps, one per batch, so the gradient is measured where training is and not at the start: at
    initialisation LoRA's B is zero, which leaves A without any gradient. Returns the losses."""
    device = next(model.parameters()).device
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], "adamw_torch", lr)
    model.train()
    losses = [training_step(model, {k: v.to(device) for k, v in batch.items()}, optimizer, precision)
              for batch in batches]
    model.zero_grad(set_to_none=True)
    return losses


def gradient_noise(model, batches: dict[int, list[dict]], *, precision: str = "fp32") -> dict[int, dict]:
    """How much the gradient of the trainable weights varies from batch to batch, per batch size, estimated without
    bias.

    batches: {batch size b: [batch, batch, ...]} (answer_batch dicts, disjoint rows). For each size, the gradient gᵢ
    of each of its k batches and, per batch, uᵢ = ‖gᵢ − ḡ‖² · k/(k − 1): the mean of the uᵢ is an unbiased estimate of
    the batch gradient's variance E‖g_b − G‖² = tr(Σ)/b (tr(Σ): the per-example gradient variance), whatever the
    signal. ("variance", "samples": the uᵢ, "cosine": mean pairwise cosine between the gᵢ, "batches": k.)

    Relative to the signal: |G|² is estimated without bias from the mean gradient over all N examples,
    ‖ḡ_all‖² − tr(Σ)/N (McCandlish et al. 2018), and "noise" = variance / |G|², "noise_scale" = tr(Σ)/|G|² (the
    batch size where noise and signal are equal). The old ‖gᵢ − ḡ‖²/‖ḡ‖² over k batches levels off near k − 1 when
    noise dominates, whatever b: ‖ḡ‖² is mostly noise too. Weights are not changed (no optimizer step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    out, total, examples = {}, None, 0
    model.train()
    for size, group in batches.items():
        grads = []
        for batch in group:
            model.zero_grad(set_to_none=True)
            with autocast(precision, device.type):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            grads.append(torch.cat([p.grad.float().flatten() for p in params]))
        g = torch.stack(grads)
        k = len(grads)
        total = g.sum(0) * size if total is None else total + g.sum(0) * size
        examples += k * size
        samples = (((g - g.mean(0)) ** 2).sum(1) * k / (k - 1)).tolist() if k > 1 else [math.nan]
        unit = torch.nn.functional.normalize(g, dim=1)
        cos = unit @ unit.T
        out[size] = {"variance": sum(samples) / len(samples), "samples": samples, "batches": k,
                     "cosine": float((cos.sum() - k) / (k * (k - 1))) if k > 1 else math.nan}
    model.zero_grad(set_to_none=True)
    trace = sum(size * n["variance"] for size, n in out.items()) / len(out)  # tr(Σ), from every size alike
    signal = float((total / examples).pow(2).sum()) - trace / examples  # unbiased |G|²
    for n in out.values():
        n["signal"], n["trace"] = signal, trace
        n["noise"] = n["variance"] / signal if signal > 0 else math.inf
        n["noise_scale"] = trace / signal if signal > 0 else math.inf
    return out


def continue_too_low(method: str, low: float, best: float, *, profile: Profile, data, steps: int, batch_size: int,
                     seeds=(0, 1, 2), progress: bool = True) -> dict[int, dict]:
    """Is a too-low rate stuck in a minimum? Per seed: train `steps` steps at the rate `low` (as the sweep did), then
    from where it stopped `steps` more at the rate `best`, with a new schedule. {seed: {"low": validation loss where
    the too-low run stopped, "continued": after the continuation, "grad_start"/"grad_end": the too-low run's first and
    last gradient norm}}. A minimum would leave nothing to gain nearby; a slope or a plateau does not."""
    from tqdm.auto import tqdm

    out = {}
    for seed in tqdm(seeds, desc=f"{method}: too-low run, then its continuation", disable=not progress):
        common = dict(profile=profile, data=data, max_steps=steps, batch_size=batch_size, seed=seed, eval_every=steps,
                      save=False, score_splits=(), progress=False)
        stopped = run_experiment(method, learning_rate=low, keep_model=True, **common)
        grads = stopped.losses("grad_norm")[1]
        onward = run_experiment(method, learning_rate=best, keep_model=False, start=stopped, **common)
        stopped.trained_model = None
        out[seed] = {"low": stopped.final("eval_loss"), "continued": onward.final("eval_loss"),
                     "grad_start": grads[0], "grad_end": grads[-1]}
    return out


def accumulation_match(losses_big: list[float], losses_acc: list[float], weights: dict) -> dict:
    """Relative differences between batch B and (B/k) x k accumulation: of the logged losses, and of the trained
    weights measured against the size of the update (weights: {"base", "big", "acc"} flat tensors)."""
    loss_diff = max(abs(a - b) / abs(a) for a, b in zip(losses_big, losses_acc, strict=True))
    update = (weights["big"] - weights["base"]).norm()
    return {"loss_diff": loss_diff, "weight_diff": float((weights["big"] - weights["acc"]).norm() / update)}


def baseline_loss(method: str = "lora", *, profile: Profile | None = None, data=None) -> float:
    """Validation loss of the untrained model as `method` loads it (LoRA's fresh adapters have B = 0: the same
    function), computed exactly as a training run's evaluation computes it."""

    profile = profile or get_profile()
    data = data if data is not None else profile_dataset(profile)
    model, tokenizer = load_model(profile.model, method, precision=profile.precision, device=profile.device)
    return eval_loss(model, tokenizer, data, profile)


def flat_trainable(model):
    """All trainable weights of a model as one flat fp32 vector (a torch.Tensor, to compare two trained models)."""

    return torch.cat([p.detach().float().flatten() for p in model.parameters() if p.requires_grad])


def accumulation_check(profile: Profile | None = None, *, data=None, steps: int = 2, big: int = 8, k: int = 2,
                       tolerance: float = 0.05, optim: str = "sgd", learning_rate: float = 1e-2,
                       precision: str = "fp32") -> dict:
    """Train LoRA with batch `big` and with batch big/k x k accumulation from the same start on the same examples;
    return how far apart their losses and trained weights are (ftkit.accumulation_match) and both runs.

    optim="sgd" by default: its update is the gradient times the rate, so the weights compare the accumulated
    gradients. AdamW's first update is about lr x sign(gradient): entries whose gradient is ~0 flip sign on rounding
    noise (bf16 here) and move a full step either way, so with AdamW the weights differ although the gradients agree.
    precision="fp32" by default, so the comparison shows the arithmetic: under bf16 autocast the same SGD check
    differed by 4.5-5.3 % of the update from rounding alone (ci, 2026-11-29), on both sides of a 5 % tolerance."""


    profile = replace(profile or get_profile(), precision=precision)
    data = data if data is not None else profile_dataset(profile)
    common = dict(profile=profile, data=data, save=False, score_splits=(), progress=False, max_steps=steps,
                  eval_every=steps, optim=optim, learning_rate=learning_rate)
    one = run_experiment("lora", batch_size=big, **common)
    acc = run_experiment("lora", batch_size=big // k, gradient_accumulation_steps=k, **common)
    set_seed(0)
    init, _ = load_model(profile.model, "lora", precision=profile.precision, device=profile.device)
    match = accumulation_match(one.losses()[1], acc.losses()[1], {"base": flat_trainable(init),
                               "big": flat_trainable(one.trained_model), "acc": flat_trainable(acc.trained_model)})
    return {**match, "tolerance": tolerance, "big": one, "accumulated": acc}
