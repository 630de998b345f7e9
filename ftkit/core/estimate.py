"""Training memory estimated from a model config, from first principles: four buckets (weights, gradients, optimizer,
activations) per method, precision and batch; which GPU fits; what sharding over N devices leaves on each.

Used by chapter 1 (1.3's estimate beside the measurement), chapter 2 (memory against r and batch), chapter 4 (the
ZeRO/FSDP arithmetic) and the capstone's memory plan. Checked against ftkit.measure_memory in tests/test_memory.py.
"""

from __future__ import annotations

import math

from ftkit.core.configs import KNOWN_CONFIGS, LINEAR_NAMES, ModelShape, model_shape
from ftkit.core.hparams import METHODS, check_method
from ftkit.core.memory import GB, OPTIMIZERS, PRECISION_BYTES, MemoryBreakdown
from ftkit.core.models import adapter_precision, default_upcast


def nf4_bytes(n: int, double_quant: bool = True, blocksize: int = 64) -> float:
    """Bytes of n weights in NF4: 4 bits each + one absmax per 64-block.

    Without double quantization the absmax is fp32 (32/64 = 0.5 bit/param). With it (QLoRA paper,
    sec. 3) the absmax is itself quantized to 8 bit, with one fp32 constant per 256 absmax values:
    8/64 + 32/(64*256) = 0.127 bit/param, so 4.127 bits/param in all: for large n, 8 * nf4_bytes(n) / n is
    ftkit.double_quant_bits() (the notebooks' per-weight formula; a test holds the two together).
    """
    blocks = math.ceil(n / blocksize)
    if double_quant:
        return n / 2 + blocks + 4 * math.ceil(blocks / 256)
    return n / 2 + 4 * blocks


# Fixed bytes per quantized tensor in bitsandbytes 0.50 (measured; each layer has its own copies):
# the 16-entry fp32 NF4 code (64 B); with double quant also the fp32 offset (4 B) and the
# 256-entry fp32 code of the 8-bit absmax (1024 B).
NF4_TENSOR_CONSTANTS = {True: 16 * 4 + 4 + 256 * 4, False: 16 * 4}


def _targets(target_modules, shape: ModelShape | None = None) -> tuple[str, ...]:
    names = tuple(shape.linears()) if shape is not None else LINEAR_NAMES
    if target_modules == "all-linear":
        return names
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    unknown = set(target_modules) - set(names)
    if unknown:
        raise ValueError(f"unknown target_modules {sorted(unknown)}; choose from {names} or 'all-linear'")
    return tuple(target_modules)


def base_weight_bytes(config, quantized: bool = False, precision: str = "bf16", *, other_precision: str | None = None,
                      double_quant: bool = True) -> int:
    """Bytes of a model's frozen base weights, no adapters: decoder linears in NF4 (quantized) or in `precision`;
    embeddings, lm_head, norms and biases in `other_precision` (default: `precision`); plus the buffers (rotary, fp32).

    Used in notebooks/01_methods/02_quantization_nf4.ipynb (NF4 vs 16-bit, like with like) and by estimate_memory.
    """
    shape = config if isinstance(config, ModelShape) else model_shape(config)
    other = PRECISION_BYTES[other_precision or precision]
    nbytes = shape.other_params() * other + shape.buffer_bytes(PRECISION_BYTES[precision])
    if not quantized:
        return int(nbytes + shape.linear_params() * PRECISION_BYTES[precision])
    for d_in, d_out in shape.linears().values():
        nbytes += shape.layers * (nf4_bytes(d_in * d_out, double_quant) + NF4_TENSOR_CONSTANTS[double_quant])
    return int(nbytes)


def lora_params(shape: ModelShape, r: int = 16, target_modules="all-linear") -> int:
    """LoRA parameters: r * (d_in + d_out) per targeted linear layer, all layers."""
    linears = shape.linears()
    return shape.layers * sum(r * sum(linears[name]) for name in _targets(target_modules, shape))


def trainable_tensors(shape: ModelShape, method: str, lora_r: int = 16, target_modules="all-linear") -> list[int]:
    """Element counts of the trainable tensors: every parameter for "full", the LoRA A/B matrices otherwise."""
    linears = shape.linears()
    if method == "full":
        embed = [shape.vocab * shape.hidden] * (1 if shape.tied else 2)
        per_layer = [d_in * d_out for d_in, d_out in linears.values()] + [shape.hidden, shape.hidden]
        if shape.qkv_bias:
            per_layer += [linears[name][1] for name in ("q_proj", "k_proj", "v_proj")]
        if shape.qk_norm:
            per_layer += [shape.head_dim, shape.head_dim]
        return embed + per_layer * shape.layers + [shape.hidden]
    per_layer = []
    for name in _targets(target_modules, shape):
        d_in, d_out = linears[name]
        per_layer += [lora_r * d_in, d_out * lora_r]
    return per_layer * shape.layers


def optimizer_state_bytes(sizes: list[int], optimizer: str = "adamw_torch", param_bytes: int = 4) -> int:
    """Bytes of AdamW state for trainable tensors of the given element counts.

    torch AdamW: two moments in the parameter's dtype (8 B/param for fp32, 4 for bf16) + a fp32 step.
    bitsandbytes 8-bit AdamW: two uint8 moments + one fp32 absmax per 256-block each (~2.03 B/param)
    + two 256-entry fp32 code books shared by all tensors; tensors under 4096 elements keep fp32 moments
    (min_8bit_size). The paged variant has the same bytes, in CUDA unified memory (not counted by
    torch.cuda.max_memory_allocated).
    """
    if optimizer == "adamw_torch":
        return sum(2 * n * param_bytes + 4 for n in sizes)
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        small = [n for n in sizes if n < 4096]
        large = [n for n in sizes if n >= 4096]
        codebooks = 2 * 256 * 4 if large else 0  # qmap1, qmap2: one pair shared by all tensors
        return sum(8 * n for n in small) + sum(2 * n + 8 * math.ceil(n / 256) for n in large) + codebooks
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")


def layer_activation_bytes(shape: ModelShape, method: str, seq_len: int, batch_size: int, precision: str = "bf16",
                           lora_r: int = 16, target_modules="all-linear", adapter_bytes: int = 4) -> int:
    """Bytes autograd saves for backward in one Llama-style decoder layer (sdpa attention).

    Derived by listing, with saved_tensors_hooks, what transformers 5 / peft 0.21 / bitsandbytes 0.50
    save per decoder layer, and checked against `measure_memory` (tests/test_memory.py). With
    T = batch*seq tokens, p = bytes of the compute dtype, a = bytes of the adapters' dtype (4, or 2 for QLoRA's bf16)
    and 4 = fp32:

    - RMSNorm (x2): its input upcast to fp32 (T*h*4) and rsqrt (T*4); full FT also the normed
      tensor for the weight's gradient (T*h*p);
    - linear inputs: full FT saves each distinct input once (T*h*p for q/k/v, T*h*p for gate/up,
      T*i*p for down; o_proj's input is the attention output, already saved). LoRA/QLoRA: the base
      weights are frozen and save nothing; peft casts the input of every targeted layer to the adapter
      dtype (one copy per targeted layer, T*d_in*a, when p != a; shared when p == a) and saves
      lora_A's output (T*r*a);
    - attention (sdpa): q, k, v and output (T*(2q + 2kv)*p) plus a fp32 logsumexp (b*heads*s*4);
    - MLP: gate output, up output, silu output (3*T*i*p);
    - Qwen3 only: its per-head q/k RMSNorms save like the other norms, on q (T*q) and k (T*kv).
    """
    check_method(method)
    T, s, p, a = batch_size * seq_len, seq_len, PRECISION_BYTES[precision], adapter_bytes
    h, i, r = shape.hidden, shape.intermediate, lora_r
    linears = shape.linears()
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim

    norm = T * h * 4 + T * 4
    attention = T * (2 * q + 2 * kv) * p + batch_size * shape.heads * s * 4
    mlp = 3 * T * i * p
    if shape.qk_norm:  # Qwen3: RMSNorm per head on q and k (fp32 input, rsqrt per head; full FT: normed)
        q_norm = T * q * 4 + T * shape.heads * 4 + (T * q * p if method == "full" else 0)
        k_norm = T * kv * 4 + T * shape.kv_heads * 4 + (T * kv * p if method == "full" else 0)
        attention += q_norm + k_norm
    if method == "full":
        norms = 2 * (norm + norm_output_bytes(shape, T, p))
        inputs = T * h * p + T * h * p + T * i * p
        if shape.fused:  # Phi-3 reshapes the attention output into a new tensor: o_proj saves it separately
            inputs += T * q * p
    else:
        targets = _targets(target_modules, shape)
        norms = 2 * (norm + (h * 4 if shape.gemma_norm else 0))  # Gemma: the fp32 (1 + w) for the input's gradient
        inputs = len(targets) * T * r * a
        if p == a:  # same dtype: the cast is a no-op, layers sharing an input share the saved tensor
            for group in shape.input_groups():
                if any(name in targets for name in group) and (group != ("o_proj",) or shape.fused):
                    inputs += T * linears[group[0]][0] * a
        else:
            inputs += sum(T * linears[name][0] * a for name in targets)
    return norms + inputs + attention + mlp


def norm_output_bytes(shape: ModelShape, tokens: int, p: int) -> int:
    """What a trainable RMSNorm saves for its weight's gradient: the normed input in the compute dtype (Llama);
    Gemma multiplies in fp32 by (1 + w), so it saves the fp32 normed input and the fp32 (1 + w)."""
    if shape.gemma_norm:
        return tokens * shape.hidden * 4 + shape.hidden * 4
    return tokens * shape.hidden * p


def activation_bytes(shape: ModelShape, method: str, seq_len: int, batch_size: int, precision: str = "bf16",
                     gradient_checkpointing: bool = False, lora_r: int = 16, target_modules="all-linear",
                     adapter_bytes: int = 4) -> int:
    """Bytes autograd saves for backward in one forward: layers * one layer + the once-per-forward tensors.

    Once per forward: rotary cos/sin (2*s*head_dim*p), final norm, lm_head input (full FT), token
    ids and labels (int64), and the logits' log_softmax in fp32 (T*vocab*4, the loss upcasts), often
    the largest single tensor. In LoRA the embedding is frozen, so layer 0's first norm saves nothing.

    gradient_checkpointing: the forward keeps only each layer's input (T*h*p) plus the once-per-forward
    tensors; backward recomputes one layer at a time, so the estimate adds one layer's worth
    (what `measure_memory`, which watches the forward only, does not see).
    """
    layer = layer_activation_bytes(shape, method, seq_len, batch_size, precision, lora_r, target_modules, adapter_bytes)
    T, p, h = batch_size * seq_len, PRECISION_BYTES[precision], shape.hidden
    norm = T * h * 4 + T * 4
    if method == "full":
        head = norm + norm_output_bytes(shape, T, p) + T * h * p + T * 8  # final norm, lm_head input, token ids
    else:
        head = 0  # final norm (+norm) minus layer 0's first norm (-norm): its input, the frozen embedding
    once = 2 * seq_len * shape.head_dim * p + head + T * shape.vocab * 4 + T * 8 + 4  # + labels (int64), loss
    if gradient_checkpointing:
        return shape.layers * T * h * p + layer + once
    return shape.layers * layer + once


# What each data-parallel scheme splits over the devices (ZeRO paper, Rajbhandari et al. 2020, sec. 5):
# ZeRO-1 the optimizer state, ZeRO-2 also the gradients, ZeRO-3 also the weights. PyTorch FSDP's full shard
# (FSDP2 fully_shard, FSDP1 FULL_SHARD) is ZeRO-3. "none" / "ddp": every device holds everything.
SHARDING = {"none": (), "ddp": (), "zero1": ("optimizer",), "zero2": ("optimizer", "gradients"),
            "zero3": ("optimizer", "gradients", "weights"), "fsdp": ("optimizer", "gradients", "weights")}


def estimate_memory(config, method: str, *, seq_len: int, batch_size: int, optimizer: str = "adamw_torch",
                    precision: str = "bf16", gradient_checkpointing: bool = False, lora_r: int = 16,
                    target_modules="all-linear", double_quant: bool = True,
                    mixed_precision: bool = False, n_devices: int = 1, sharding: str = "none",
                    upcast_frozen_to_fp32: bool | None = None, master_weights: bool = False) -> MemoryBreakdown:
    """Predict training memory from a config, from first principles (see the module docstring); per device.

    precision: weight + compute dtype for "full" and "lora"; compute dtype for "qlora", whose non-quantized
    weights stay in it (lean QLoRA) or, with upcast_frozen_to_fp32=True, are fp32 as after peft's
    prepare_model_for_kbit_training (see models.prepare_for_training); for "lora" the upcast puts the weights outside
    the decoder's linears in fp32 likewise. None: ftkit's default (models.default_upcast: only under fp16). Full FT keeps weights, gradients and AdamW moments in
    `precision` (what torch does for a model loaded in bf16: 2+2+4 = 8 B/param). mixed_precision=True
    (full only) is torch AMP: fp32 weights, gradients and moments, 4+4+8 = 16 B/param. That is the
    total of the ZeRO paper's mixed-precision Adam, which splits it otherwise: 2 + 2 + 12 (fp16
    weights and gradients; fp32 master weights, m and v). AMP's activations are not calibrated
    (autocast also saves 16-bit copies of the weights). Adapters are in models.adapter_precision: fp32 (peft)
    for LoRA, bf16 (TRL's cast) for QLoRA except fp32 under fp16.

    master_weights=True (full FT in bf16/fp16 without mixed_precision): the optimizer updates an fp32 copy of the
    weights, +4 B/param in the optimizer bucket. Without it pure 16-bit training loses small updates: a bf16 weight of
    0.02 is spaced 2^-13 ≈ 1.2e-4 from its neighbours, so a step of 1e-5 rounds away (stochastic rounding or Kahan
    summation are what make pure-bf16 training work; torch's AdamW uses neither).

    n_devices, sharding: data parallelism over n_devices with one of SHARDING; batch_size is per device, so
    activations are per device and never sharded. "fsdp" divides weights, gradients and optimizer state as they are
    (FSDP keeps its shards in fp32 under mixed precision: 16/N B/param). "zero1"/"zero2"/"zero3" with
    mixed_precision=True use DeepSpeed's layout from the ZeRO paper: 16-bit weights (2), 16-bit gradients (2) and an
    optimizer state of 12 B/param (fp32 master weights + two moments), so ZeRO-1 is 2 + 2 + 12/N. Checked against
    the per-process bytes of a real 2-process FSDP run in tests/test_scaling.py; peaks add the all-gathered
    weights of the layer being computed, not counted here.
    """
    check_method(method)
    if sharding not in SHARDING:
        raise ValueError(f"unknown sharding {sharding!r}; choose one of {tuple(SHARDING)}")
    if not (isinstance(n_devices, int) and n_devices >= 1):
        raise ValueError(f"n_devices must be a positive integer (the number of GPUs or processes), got {n_devices!r}")
    if precision not in PRECISION_BYTES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {tuple(PRECISION_BYTES)}")
    if not (isinstance(seq_len, int) and seq_len > 0 and isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"seq_len and batch_size must be positive integers, got {seq_len!r}, {batch_size!r}")
    shape = config if isinstance(config, ModelShape) else model_shape(config)
    upcast = method != "full" and (default_upcast(precision) if upcast_frozen_to_fp32 is None else upcast_frozen_to_fp32)
    nbytes = PRECISION_BYTES[precision]
    buffers = shape.buffer_bytes(4 if method == "full" and mixed_precision else nbytes)
    sizes = trainable_tensors(shape, method, lora_r, target_modules)
    trainable = sum(sizes)

    if method == "full":
        param_dtype_bytes = 4 if mixed_precision else nbytes  # AMP keeps fp32 weights, grads and moments
        weights = base_weight_bytes(shape, False, "fp32" if mixed_precision else precision)
    else:
        param_dtype_bytes = PRECISION_BYTES[adapter_precision(method, precision)]
        # decoder linears in `precision` (lora) or NF4 (qlora); embeddings / lm_head / norms / biases in the compute
        # dtype (lean), or fp32 when upcast (for qlora, peft's prepare_model_for_kbit_training upcasts every weight
        # that is not 4-bit)
        other = "fp32" if upcast else precision
        weights = base_weight_bytes(shape, method == "qlora", precision, other_precision=other,
                                    double_quant=double_quant)
        weights += trainable * param_dtype_bytes
    gradients = trainable * param_dtype_bytes
    optimizer_state = optimizer_state_bytes(sizes, optimizer, param_dtype_bytes)
    if master_weights and method == "full" and not mixed_precision and nbytes < 4:
        optimizer_state += trainable * 4  # the fp32 copy the optimizer updates
    # QLoRA upcast by prepare_model_for_kbit_training: the fp32 embeddings make the residual stream (and every saved
    # activation) fp32 whatever the compute dtype; measured equal to the byte in tests/test_memory.py.
    act_precision = "fp32" if method == "qlora" and upcast else precision
    activations = activation_bytes(shape, method, seq_len, batch_size, act_precision, gradient_checkpointing,
                                   lora_r, target_modules, param_dtype_bytes)
    buckets = {"weights": weights, "gradients": gradients, "optimizer": optimizer_state}
    if method == "full" and mixed_precision and sharding.startswith("zero"):  # DeepSpeed: master weights in the optimizer
        n = shape.num_params()
        buckets = {"weights": n * 2 + buffers, "gradients": n * 2, "optimizer": optimizer_state + n * 4}
    for bucket in SHARDING[sharding]:
        buckets[bucket] = math.ceil(buckets[bucket] / n_devices)
    return MemoryBreakdown(weights=int(buckets["weights"]), gradients=int(buckets["gradients"]),
                           optimizer=int(buckets["optimizer"]), activations=int(activations))


def estimate_peak(estimate: MemoryBreakdown, config, *, seq_len: int, batch_size: int) -> int:
    """Rough steady-state peak of a training step (what torch.cuda.max_memory_allocated would show).

    Weights and optimizer state live all the time. The peak comes either at the start of backward,
    when all activations are alive plus two fp32 (batch*seq*vocab) buffers of the loss (the
    log_softmax gradient in and out, 8*T*vocab bytes), or at the end of backward, when all the
    gradients exist. A model, not a measurement: scripts/gpu_memory_check.py checks it on a GPU.
    """
    shape = config if isinstance(config, ModelShape) else model_shape(config)
    loss_buffers = 8 * batch_size * seq_len * shape.vocab
    return estimate.weights + estimate.optimizer + max(estimate.activations + loss_buffers, estimate.gradients)


# Memory torch can use on each GPU, in GiB: the "total capacity" torch reports in its out-of-memory
# messages (a bit less than the marketing size; the CUDA context takes a few hundred MB more).
# Colab's T4 reports "14.75 GiB total capacity" (nvidia-smi: 15360 MiB).
GPUS = {
    "T4 16 GB": 14.75,
    "L4 24 GB": 22.0,
    "RTX 3090/4090 24 GB": 23.65,
    "A100 40 GB": 39.4,
    "A6000/L40S 48 GB": 44.4,  # the 48 GB class (QLoRA paper: a 65B model on one); L40S 46,068 MiB, A6000 ~47.5 GiB
    "A100 80 GB": 79.15,
    "H100 80 GB": 79.1,
}


def fits_on(breakdown, headroom_gib: float = 1.0, gpus: dict | None = None) -> dict[str, bool]:
    """For each GPU, whether `breakdown.total` (or a byte count) fits with `headroom_gib` left free."""
    total = breakdown.total if isinstance(breakdown, MemoryBreakdown) else int(breakdown)
    gpus = GPUS if gpus is None else gpus
    return {name: total <= (gib - headroom_gib) * GB for name, gib in gpus.items()}


def fit_table(models=None, methods=METHODS, *, seq_len: int = 512, batch_size: int = 1,
              headroom_gib: float = 1.0, **estimate_kwargs) -> list[dict]:
    """Rows of "which model fits which GPU by which method": one per (model, method), GiB and a bool per GPU.

    models: names or configs (default: all of KNOWN_CONFIGS); extra keyword arguments go to estimate_memory.
    """
    models = list(KNOWN_CONFIGS) if models is None else models
    rows = []
    for model in models:
        shape = model_shape(model)
        for method in methods:
            est = estimate_memory(shape, method, seq_len=seq_len, batch_size=batch_size, **estimate_kwargs)
            fits = fits_on(est, headroom_gib)
            rows.append({
                "model": model if isinstance(model, str) else getattr(model, "name_or_path", "config"),
                "params_b": round(shape.num_params() / 1e9, 3), "method": method,
                **{f"{k}_gib": round(v / GB, 2) for k, v in est.as_dict().items() if v is not None},
                **fits, "smallest_gpu": next((name for name, ok in fits.items() if ok), None),
            })
    return rows
