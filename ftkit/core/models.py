"""Load a model and its tokenizer by name, ready for one method: full fine-tuning, LoRA or QLoRA.

Used in every notebook: `model, tokenizer = ftkit.load_model(profile.model, "lora")`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
from typing import TYPE_CHECKING

from ftkit.core.builtin import model_path
from ftkit.core.hparams import Hyperparameters, check_method, loading_settings

if TYPE_CHECKING:  # torch is imported where it is used, so the doctor can report a missing torch
    import torch


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(precision: str, device: str = "cpu"):
    """The autocast the Trainer's bf16=/fp16= flags put around each forward: on in bf16/fp16 (weights stay as they
    are, matmuls run in that dtype), off in fp32 (no context at all). Used by measure_step, colab.prompt_logits and
    sweep.gradient_noise."""
    import contextlib

    import torch

    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch_dtype(precision))


def require_bitsandbytes() -> None:
    """Raise a clear error when QLoRA is asked for and bitsandbytes is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("QLoRA needs bitsandbytes for its 4-bit NF4 weights: pip install bitsandbytes==0.50.2")


def disable_bnb_cpu_repacking(model: torch.nn.Module) -> int:
    """Work around a bitsandbytes 0.50.2 bug: on AVX512-BF16 CPUs, state_dict() after an eval forward silently
    corrupts 4-bit weights (FINDINGS §3). Turning the CPU repacking off keeps them intact. Returns layers fixed."""
    import bitsandbytes as bnb

    fixed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            fixed += 1
    return fixed


def nf4_config(precision: str, double_quant: bool = True):
    """QLoRA's quantization: NF4 with double quantization, computing in `precision`."""
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=torch_dtype(precision))


def lora_config(hp: Hyperparameters):
    """peft's LoraConfig for a causal LM from a run's settings: rank, alpha as used (hp.alpha: 2 r unless given),
    dropout, target modules, rsLoRA's alpha / sqrt(r) scale with use_rslora, DoRA with use_dora."""
    from peft import LoraConfig

    target_modules = list(hp.target_modules) if isinstance(hp.target_modules, tuple) else hp.target_modules
    return LoraConfig(r=hp.lora_r, lora_alpha=hp.alpha, lora_dropout=hp.lora_dropout, target_modules=target_modules,
                      use_rslora=hp.use_rslora, use_dora=hp.use_dora, task_type="CAUSAL_LM")


def load_tokenizer(name: str):
    """The tokenizer of a model name, with left padding (for batched generation) and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def adapter_precision(method: str, precision: str) -> str:
    """The dtype of LoRA adapters during training: fp32 (peft's default), but bf16 for QLoRA, as TRL's SFTTrainer casts
    a quantized model's adapters (the QLoRA paper's choice), except under fp16 compute, where they stay fp32: the
    GradScaler unscales their gradients, and CUDA's unscale kernel refuses bf16 (FINDINGS §11; a T4 crashed there)."""
    return "bf16" if method == "qlora" and precision != "fp16" else "fp32"


def default_upcast(precision: str) -> bool:
    """Whether LoRA and QLoRA keep the frozen weights outside the decoder's linear layers (embeddings, norms, lm_head)
    in fp32 when none is asked for: under fp16 compute, yes; under bf16 and fp32, no (lean, as in the compute dtype).
    Those weights carry the residual stream, and fp16's largest value is 65,504: the built-in 135M model already
    reaches |h| ~ 25,000 in it, and Qwen2/2.5 are reported to overflow to NaN in fp16. An fp32 stream cannot overflow,
    while autocast still runs every matmul in fp16 (a T4's tensor cores). bf16 has fp32's range: nothing to guard."""
    return precision == "fp16"


def upcast_outside_linears(model):
    """Put every weight of a model that is not a decoder linear layer's (embeddings, norms, lm_head) in fp32: for LoRA,
    what peft's prepare_model_for_kbit_training does to a 4-bit model's other weights. Returns the model."""
    import torch

    head = model.get_output_embeddings()
    linear = {id(p) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
              for p in m.parameters(recurse=False)}
    for param in model.parameters():
        if id(param) not in linear and param.is_floating_point():
            param.data = param.data.float()
    return model


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def evaluating(model):
    """A block in eval mode without gradients (dropout off), then the model back in the mode it was in: a model
    measured between training steps goes on training as before."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


# The attention kernel a training step runs with, by device: on the CPU, at the course's lengths (<= 256 tokens),
# PyTorch's SDPA backward in bf16 costs more than the plain math (a ci LoRA step, 4 rows of ~90 tokens: 1.58 s with
# SDPA, 1.31 s eager); on a GPU SDPA's fused kernels are faster and never store the L x L attention matrix.
# Evaluation, generation and measure_memory keep the model's own (SDPA): without a backward it is as fast or faster
# here, and it is the kernel estimate_memory models.
TRAINING_ATTENTION = {"cpu": "eager"}


@contextlib.contextmanager
def training_kernels(model, device: str, mixed_precision: bool, *, backward: bool = True):
    """For a block of training steps (or, backward=False, of evaluation), the kernels that run fastest here, then the
    model as it was.

    - with a backward, TRAINING_ATTENTION's attention kernel on its device (the CPU: eager);
    - under autocast (mixed_precision), peft's LoRA layers keep their input as it comes instead of casting it to the
      adapters' fp32 (peft's default): autocast casts it back to bf16/fp16 for the adapter's matmul anyway, so the
      result is the same and two copies per adapted layer go (a ci LoRA step: 1.38 -> 1.29 s).
    Used by the course's trainer (ftkit.core.train.sft_trainer) and ftkit.core.train.training_step."""
    from peft.helpers import disable_input_dtype_casting

    base = base_model(model)
    before = base.config._attn_implementation
    wanted = TRAINING_ATTENTION.get(device) if backward else None
    if wanted and wanted != before:
        base.set_attn_implementation(wanted)
    try:
        with disable_input_dtype_casting(model, active=mixed_precision):
            yield model
    finally:
        if wanted and wanted != before:
            base.set_attn_implementation(before)


def forward_autocast(model):
    """The autocast a model's forward needs outside the Trainer: a LoRA base upcast by upcast_outside_linears (fp32
    embeddings, norms and lm_head around 16-bit linears) runs its matmuls under autocast to the linears' dtype, as in
    training; every other model runs as it is (a disabled autocast)."""
    import torch

    device = next(model.parameters()).device.type
    if model.get_input_embeddings().weight.dtype == torch.float32:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.dtype in (torch.float16, torch.bfloat16):
                return torch.autocast(device, dtype=module.weight.dtype)
    return contextlib.nullcontext()


def load_base(name: str, method: str = "lora", *, precision: str = "fp32", device: str = "cpu",
              gradient_checkpointing: bool = False, double_quant: bool = True,
              upcast_frozen_to_fp32: bool | None = None):
    """The base model as a method trains it, without adapters: fp32 for "full", `precision` for "lora", NF4
    (FINDINGS §3 workaround applied) for "qlora", prepared by prepare_for_training. upcast_frozen_to_fp32 (LoRA and
    QLoRA): the weights outside the decoder's linear layers in fp32; None means default_upcast(precision)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftkit.core.emulation import emulating

    check_method(method)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA GPU is visible. On Colab: Runtime > Change runtime type > "
                           "T4 GPU; elsewhere use device='cpu' (FTKIT_PROFILE=cpu).")
    if precision == "fp16" and device == "cpu" and not emulating():
        raise ValueError("fp16 training needs a CUDA GPU (CPUs have no fast fp16 and AMP refuses it); "
                         "use precision='bf16' or 'fp32' on the CPU.")
    from ftkit.core.quiet import quiet_loading

    path = model_path(name)
    try:
        with quiet_loading():
            if method == "qlora":
                model = AutoModelForCausalLM.from_pretrained(path, quantization_config=nf4_config(precision, double_quant),
                                                             dtype=torch_dtype(precision),
                                                             device_map={"": 0} if device == "cuda" else "cpu")
                disable_bnb_cpu_repacking(model)
            else:
                dtype = torch.float32 if method == "full" else torch_dtype(precision)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    except OSError as err:
        if "/" in name:
            raise OSError(f"Could not load {name!r} from the Hugging Face Hub ({err}). It needs network access; "
                          "offline, use the built-in model 'smollm2-135m' (FTKIT_PROFILE=cpu or ci).") from err
        raise
    upcast = default_upcast(precision) if upcast_frozen_to_fp32 is None else upcast_frozen_to_fp32
    return prepare_for_training(model, method, gradient_checkpointing=gradient_checkpointing,
                                upcast_frozen_to_fp32=upcast)


def prepare_for_training(model, method: str, *, gradient_checkpointing: bool = False,
                         upcast_frozen_to_fp32: bool = False):
    """Set a loaded base up for training; for LoRA and QLoRA, one of two preparations.

    upcast_frozen_to_fp32=True for QLoRA is peft's prepare_model_for_kbit_training, what most QLoRA tutorials call: it
    freezes every weight and upcasts the frozen ones that are not 4-bit (embeddings, norms, lm_head) to fp32, which
    makes the residual stream and every saved activation fp32 too; for LoRA, the same weights go to fp32
    (upcast_outside_linears). False (lean, the default under bf16): they stay in the compute dtype; what training
    needs of that preparation stays (peft freezes the base; with gradient checkpointing, input gradients are enabled).
    Measured in notebooks/01_methods/03 (bytes) and tests/test_models.py (same loss curve within a stated tolerance).
    """
    if method == "qlora" and upcast_frozen_to_fp32:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if method == "lora" and upcast_frozen_to_fp32:
        upcast_outside_linears(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    """True for a model with 4-bit weights (a QLoRA base): what makes TRL cast its adapters to bf16."""
    return any(type(p).__name__ == "Params4bit" for p in model.parameters())


def cast_qlora_adapters(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Put a QLoRA model's adapter weights in adapter_precision("qlora", precision): bf16 as TRL's SFTTrainer casts
    them, fp32 under fp16 compute. Done at load, again after the trainer is built (TRL's cast), and at reload, so that
    a fresh model, a training one, a reloaded one and estimate_memory agree. Returns the model."""
    dtype = torch_dtype(adapter_precision("qlora", precision))
    for name, param in model.named_parameters():
        if param.requires_grad or ".lora_" in name:  # a reloaded adapter is frozen (inference mode): match by name
            param.data = param.data.to(dtype)
    return model


def load_model(name: str, method: str = "lora", *, precision: str = "fp32", device: str = "cpu",
               hp: Hyperparameters | None = None, upcast_frozen_to_fp32: bool | None = None, **settings):
    """Load (model, tokenizer) for one method: "full" (all weights trainable, fp32 master weights),
    "lora" (frozen base in `precision` + fp32 adapters, peft's default) or "qlora" (frozen NF4 base + adapters
    in adapter_precision: bf16 as TRL's SFTTrainer trains them, fp32 under fp16).

    hp: the run's settings, of which loading uses those that shape the model: the adapters' lora_r, lora_alpha,
    lora_dropout, use_rslora, target_modules, and gradient_checkpointing (default: the course's). Any of them can be
    given as a keyword instead, `load_model(name, "lora", lora_r=8)`. upcast_frozen_to_fp32: the preparation, see
    prepare_for_training (None: default_upcast, lean except under fp16)."""
    hp = loading_settings(method, hp, settings)
    peft_cfg = lora_config(hp) if method != "full" else None
    model = load_base(name, method, precision=precision, device=device, gradient_checkpointing=hp.gradient_checkpointing,
                      upcast_frozen_to_fp32=upcast_frozen_to_fp32)
    if peft_cfg is not None:
        from peft import get_peft_model

        from ftkit.core.quiet import library_warnings

        with library_warnings():  # peft reads a property transformers deprecated: nothing for a learner to fix
            model = get_peft_model(model, peft_cfg)
    if method == "qlora":
        cast_qlora_adapters(model, precision)
    return model, load_tokenizer(name)


def logical_numel(param) -> int:
    """Values a weight holds: a 4-bit packed one (bitsandbytes' Params4bit) stores two per byte element."""
    return param.numel() * 2 if type(param).__name__ == "Params4bit" else param.numel()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a 4-bit packed weight counts its logical number of values."""
    trainable = total = 0
    for p in model.parameters():
        n = logical_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def free_memory() -> None:
    """Give back the memory of deleted models (Python objects, then CUDA's cache)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


