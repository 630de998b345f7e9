"""Model configs: public config.json values of the course's models, one config_for(name), and the shape numbers
that decide memory (ModelShape).

Used by ftkit.memory's estimates, the capstone's memory plan and notebooks 1.2-1.3 (`ftkit.model_shape("7B id")`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The linear layers of a Llama-style decoder layer (what peft's "all-linear" targets; lm_head excluded).
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Phi-3 fuses q/k/v into one qkv_proj and gate/up into one gate_up_proj.
FUSED_LINEAR_NAMES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


# Public config.json values, copied from each model's config.json on the Hugging Face Hub
# (https://huggingface.co/<id>/blob/main/config.json). Keys are the Hub ids.
KNOWN_CONFIGS: dict[str, dict] = {
    "HuggingFaceTB/SmolLM2-135M": dict(  # 134.5M params
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192),
    "HuggingFaceTB/SmolLM2-360M": dict(  # 361.8M params: the gpu and t4 profiles' model
        model_type="llama", vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
        num_attention_heads=15, num_key_value_heads=5, tie_word_embeddings=True, max_position_embeddings=8192),
    "meta-llama/Llama-3.2-1B": dict(  # 1.24B
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
        max_position_embeddings=131072),
    "Qwen/Qwen2.5-0.5B": dict(  # 0.49B
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=32768),
    "Qwen/Qwen2.5-1.5B": dict(  # 1.54B
        model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=131072),
    "Qwen/Qwen2.5-7B": dict(  # 7.62B
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False, max_position_embeddings=131072),
    "mistralai/Mistral-7B-v0.1": dict(  # 7.24B
        model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, max_position_embeddings=32768),
    "google/gemma-2b": dict(  # 2.51B; RMSNorm scales by (1 + w), embeddings times sqrt(hidden), GELU MLP
        model_type="gemma", vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
        num_attention_heads=8, num_key_value_heads=1, head_dim=256, tie_word_embeddings=True,
        max_position_embeddings=8192),
    "google/gemma-7b": dict(  # 8.54B
        model_type="gemma", vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=16, head_dim=256, tie_word_embeddings=True,
        max_position_embeddings=8192),
    "microsoft/Phi-3-mini-4k-instruct": dict(  # 3.82B; fused qkv_proj and gate_up_proj
        model_type="phi3", vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False, max_position_embeddings=4096),
    "microsoft/Phi-3-medium-4k-instruct": dict(  # 14.0B
        model_type="phi3", vocab_size=32064, hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
        num_attention_heads=40, num_key_value_heads=10, tie_word_embeddings=False, max_position_embeddings=4096),
    "meta-llama/Llama-2-7b-hf": dict(  # 6.74B
        model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False, max_position_embeddings=4096),
    "meta-llama/Llama-2-13b-hf": dict(  # 13.0B
        model_type="llama", vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
        num_attention_heads=40, num_key_value_heads=40, tie_word_embeddings=False, max_position_embeddings=4096),
    "meta-llama/Llama-2-70b-hf": dict(  # 69.0B
        model_type="llama", vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False, max_position_embeddings=4096),
    "meta-llama/Meta-Llama-3-70B": dict(  # 70.6B
        model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False, max_position_embeddings=8192),
}

# Decoder families the estimator covers, each checked against measure_memory in tests/test_memory.py.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3")


def config_name(model: str) -> str:
    """The KNOWN_CONFIGS entry (or local folder) describing a model name: instruct models share the base's shape."""
    from ftkit.core.builtin import KNOWN_MODELS, model_path

    if model == "smollm2-135m":
        return "HuggingFaceTB/SmolLM2-135M"
    if model in KNOWN_MODELS:  # the other built-in models: their folder's config.json
        return model_path(model)
    base = model.removesuffix("-Instruct")
    return base if base in KNOWN_CONFIGS else model


def config_for(model):
    """A transformers config for a model name (a built-in name, a KNOWN_CONFIGS id or short name, a hub id), a local
    folder or config.json, a dict of config.json values, or a config (returned as it is)."""
    from transformers import AutoConfig

    if isinstance(model, dict):
        values = dict(model)
        return AutoConfig.for_model(values.pop("model_type", "llama"), **values)
    if not isinstance(model, (str, Path)):
        return model  # already a config
    name = config_name(str(model))
    for key, values in KNOWN_CONFIGS.items():
        if name in (key, key.split("/")[-1]):
            return config_for(values)
    path = Path(name)
    if path.is_file():
        return config_for(json.loads(path.read_text()))
    if path.is_dir():
        return AutoConfig.from_pretrained(path)
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as err:
        raise OSError(
            f"could not load config {name!r}: not in KNOWN_CONFIGS, not a local folder or config.json, "
            f"and the Hugging Face Hub is not reachable (offline?). Known: {list(KNOWN_CONFIGS)}"
        ) from err


@dataclass
class ModelShape:
    """The numbers of a Llama-style decoder that decide its memory."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool = False  # Qwen2 has biases on q, k, v
    qk_norm: bool = False  # Qwen3 normalises q and k per head
    fused: bool = False  # Phi-3: qkv_proj and gate_up_proj instead of q/k/v_proj and gate/up_proj
    gemma_norm: bool = False  # Gemma: RMSNorm scales by (1 + w) in fp32; embeddings times sqrt(hidden) (a buffer)

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.fused:
            return {"qkv_proj": (self.hidden, q + 2 * kv), "o_proj": (q, self.hidden),
                    "gate_up_proj": (self.hidden, 2 * self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    def input_groups(self) -> list[tuple[str, ...]]:
        """Linear layers that read the same input tensor (autograd saves it once)."""
        if self.fused:
            return [("qkv_proj",), ("o_proj",), ("gate_up_proj",), ("down_proj",)]
        return [("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",)]

    def buffer_bytes(self, dtype_bytes: int = 4) -> int:
        """Buffers: rotary inv_freq + original_inv_freq (fp32), and Gemma's embedding scale (in the model's dtype)."""
        return 2 * (self.head_dim // 2) * 4 + (dtype_bytes if self.gemma_norm else 0)

    def linear_params(self) -> int:
        """Weights in all decoder linear layers (the ones QLoRA quantizes), all layers."""
        return self.layers * sum(i * o for i, o in self.linears().values())

    def other_params(self) -> int:
        """Embeddings, lm_head (if untied), norms and biases: the weights that stay in 16/32 bit."""
        per_layer = 2 * self.hidden  # input_layernorm, post_attention_layernorm
        if self.qkv_bias:
            per_layer += (self.heads + 2 * self.kv_heads) * self.head_dim
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * per_layer + self.hidden  # + final norm

    def num_params(self) -> int:
        """Total parameter count, as model.num_parameters() reports it (tied weights once)."""
        return self.linear_params() + self.other_params()


def model_shape(config) -> ModelShape:
    """ModelShape from a transformers config, a dict of config.json values, or a name for config_for."""
    if isinstance(config, ModelShape):
        return config
    values = config if isinstance(config, dict) else config_for(config).to_dict()
    model_type = values.get("model_type", "llama")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} not supported: the estimator covers the decoder families "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)} (Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3). "
                         "For another family, measure a small random-initialised copy with ftkit.measure_memory.")
    if values.get("partial_rotary_factor", 1.0) != 1.0 or values.get("rope_scaling"):
        raise ValueError(f"{model_type} config with partial rotary or rope_scaling (long-context variants) is not "
                         "covered; use the short-context config of the same model (same weights and memory).")
    heads = values["num_attention_heads"]
    return ModelShape(
        vocab=values["vocab_size"], hidden=values["hidden_size"], intermediate=values["intermediate_size"],
        layers=values["num_hidden_layers"], heads=heads,
        kv_heads=values.get("num_key_value_heads") or heads,
        head_dim=values.get("head_dim") or values["hidden_size"] // heads,
        tied=bool(values.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2" or bool(values.get("attention_bias", False)),
        qk_norm=model_type == "qwen3",
        fused=model_type == "phi3",
        gemma_norm=model_type == "gemma",
    )
