"""Memory estimates checked against real training steps on a random SmolLM2-135M-shaped model (4 layers)."""

import math

import pytest
import torch

import ftkit
from ftkit.core import configs as C
from ftkit.core import estimate as E
from ftkit.core import hparams as H
from ftkit.core import memory as M

SEQ_LENS = (32, 64, 128)
BATCH = 2
# The real SmolLM2-135M architecture (vocab 49152, hidden 576, 9 heads / 3 kv heads, tied), 4 of its 30 layers.
SMOL = dict(C.KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M"], num_hidden_layers=4)
EXACT = ("weights", "gradients", "optimizer")


def rel_err(measured: int, estimated: int) -> float:
    return abs(estimated - measured) / measured


def assert_close(measured: M.MemoryBreakdown, estimated: M.MemoryBreakdown):
    for field in EXACT:
        assert rel_err(getattr(measured, field), getattr(estimated, field)) < 0.02, field
    assert rel_err(measured.activations, estimated.activations) < 0.15, "activations"


@pytest.fixture(scope="module", params=H.METHODS)
def fp32_model(request):
    """(method, model) built once per method, fp32."""
    return request.param, M.random_model(SMOL, request.param, precision="fp32", seed=0)


@pytest.fixture(scope="module")
def fp32_measurements(fp32_model):
    """{seq_len: MemoryBreakdown} measured with one AdamW step, per method."""
    method, model = fp32_model
    return method, {s: M.measure_memory(model, M.random_batch(SMOL["vocab_size"], s, BATCH, seed=s))
                     for s in SEQ_LENS}


@pytest.mark.parametrize("seq_len", SEQ_LENS)
def test_estimate_matches_measurement_fp32(fp32_measurements, seq_len):
    method, measured = fp32_measurements
    est = E.estimate_memory(SMOL, method, seq_len=seq_len, batch_size=BATCH, precision="fp32")
    assert_close(measured[seq_len], est)


@pytest.mark.parametrize("method,optimizer", [("full", "adamw_torch"), ("lora", "adamw_8bit"), ("qlora", "adamw_8bit")])
def test_estimate_matches_measurement_bf16(method, optimizer):
    """bf16: fp32 norm upcasts and peft's fp32 input casts; bf16 AdamW moments; 8-bit AdamW state."""
    model = M.random_model(SMOL, method, precision="bf16", seed=1)
    measured = M.measure_memory(model, M.random_batch(SMOL["vocab_size"], 64, BATCH), optimizer=optimizer)
    est = E.estimate_memory(SMOL, method, seq_len=64, batch_size=BATCH, precision="bf16", optimizer=optimizer)
    assert_close(measured, est)


def test_estimate_matches_measurement_standard_qlora_preparation():
    """peft's prepare_model_for_kbit_training (fp32 upcast of the frozen non-4-bit weights), modelled exactly too,
    and larger than lean QLoRA (the default) in weights and activations."""
    model = M.random_model(SMOL, "qlora", precision="bf16", seed=1, upcast_frozen_to_fp32=True)
    measured = M.measure_memory(model, M.random_batch(SMOL["vocab_size"], 64, BATCH), optimizer="adamw_8bit")
    kw = dict(seq_len=64, batch_size=BATCH, precision="bf16", optimizer="adamw_8bit")
    assert_close(measured, E.estimate_memory(SMOL, "qlora", upcast_frozen_to_fp32=True, **kw))
    lean = E.estimate_memory(SMOL, "qlora", **kw)
    assert lean.weights < measured.weights and lean.activations < measured.activations
    assert rel_err(measured.weights, lean.weights) > 0.02  # the lean estimate would miss the upcast


TINY = {  # small versions of the other supported families: Qwen2 (q/k/v biases), Mistral (untied), Qwen3 (q/k norm)
    "qwen2": dict(C.KNOWN_CONFIGS["Qwen/Qwen2.5-0.5B"], vocab_size=4096, num_hidden_layers=2),
    "mistral": dict(C.KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"], vocab_size=4096, hidden_size=512,
                    intermediate_size=1024, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2),
    "qwen3": dict(model_type="qwen3", vocab_size=4096, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=128, tie_word_embeddings=True),
}


# Gemma (RMSNorm times (1 + w) in fp32, scaled embeddings, GELU) and Phi-3 (fused qkv_proj / gate_up_proj)
EXACT_FAMILIES = {
    "gemma": dict(model_type="gemma", vocab_size=4096, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=128, tie_word_embeddings=True),
    "phi3": dict(model_type="phi3", vocab_size=4096, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False, pad_token_id=0),
}


@pytest.mark.parametrize("family,method,precision", [
    ("gemma", "full", "bf16"), ("gemma", "lora", "fp32"), ("gemma", "qlora", "bf16"),
    ("phi3", "full", "fp32"), ("phi3", "lora", "bf16"), ("phi3", "qlora", "bf16"),
])
def test_estimate_is_exact_on_gemma_and_phi3(family, method, precision):
    """All four buckets equal to the byte (random-init, CPU), like Llama, Qwen2 and Mistral."""
    cfg = EXACT_FAMILIES[family]
    model = M.random_model(cfg, method, precision=precision, seed=3)
    measured = M.measure_memory(model, M.random_batch(cfg["vocab_size"], 64, BATCH))
    est = E.estimate_memory(cfg, method, seq_len=64, batch_size=BATCH, precision=precision)
    assert measured.as_dict() == est.as_dict()


@pytest.mark.parametrize("family,method", [("qwen2", "qlora"), ("mistral", "full"), ("qwen3", "full"), ("qwen3", "lora")])
def test_estimate_matches_other_families(family, method):
    cfg = TINY[family]
    model = M.random_model(cfg, method, precision="bf16", seed=3)
    measured = M.measure_memory(model, M.random_batch(cfg["vocab_size"], 64, BATCH))
    assert_close(measured, E.estimate_memory(cfg, method, seq_len=64, batch_size=BATCH, precision="bf16"))


def test_wrong_formula_fails(fp32_measurements):
    """The tolerances are tight enough to catch a wrong input: each wrong estimate misses."""
    method, measured = fp32_measurements
    m = measured[64]
    kw = dict(batch_size=BATCH, precision="fp32")
    assert rel_err(m.activations, E.estimate_memory(SMOL, method, seq_len=128, **kw).activations) > 0.15
    assert rel_err(m.weights, E.estimate_memory(SMOL, method, seq_len=64, batch_size=BATCH,
                                                precision="bf16").weights) > 0.02
    if method == "qlora":  # forgetting the quantization
        assert rel_err(m.weights, E.estimate_memory(SMOL, "lora", seq_len=64, **kw).weights) > 0.02
    if method != "full":
        assert rel_err(m.gradients, E.estimate_memory(SMOL, method, seq_len=64, lora_r=8, **kw).gradients) > 0.02
        assert rel_err(m.optimizer, E.estimate_memory(SMOL, method, seq_len=64, optimizer="adamw_8bit",
                                                      **kw).optimizer) > 0.02


def test_gradient_checkpointing():
    """The forward keeps layer inputs only; the estimate adds the one layer recomputed in backward."""
    model = M.random_model(SMOL, "full", precision="fp32", seed=2)
    model.gradient_checkpointing_enable()
    measured = M.measure_memory(model, M.random_batch(SMOL["vocab_size"], 32, BATCH))
    shape = C.model_shape(SMOL)
    est = E.estimate_memory(shape, "full", seq_len=32, batch_size=BATCH, precision="fp32",
                            gradient_checkpointing=True)
    no_gc = E.estimate_memory(shape, "full", seq_len=32, batch_size=BATCH, precision="fp32")
    one_layer = E.layer_activation_bytes(shape, "full", 32, BATCH, "fp32")
    assert rel_err(measured.activations, est.activations - one_layer) < 0.02
    assert est.activations < no_gc.activations


def test_count_parameters_and_weight_dtypes(fp32_model):
    method, model = fp32_model
    shape = C.model_shape(SMOL)
    trainable, total = ftkit.count_parameters(model)
    lora = E.lora_params(shape, 16) if method != "full" else 0
    assert total == shape.num_params() + lora
    assert trainable == (shape.num_params() if method == "full" else lora)
    by_dtype = M.weights_by_dtype(model)
    assert sum(by_dtype.values()) == M.param_bytes(model)
    # bitsandbytes quantizes the decoder linears only: packed uint8 + uint8 absmax; embeddings, norms stay fp32
    assert ("uint8" in by_dtype) == (method == "qlora")
    if method == "qlora":
        linear = shape.linear_params()
        assert by_dtype["uint8"] == linear // 2 + linear // 64


# Published parameter counts (model cards / Hub "Model size"), and an exact count from a meta-device model.
PUBLISHED = {
    "HuggingFaceTB/SmolLM2-135M": 134.5e6, "meta-llama/Llama-3.2-1B": 1.24e9, "Qwen/Qwen2.5-0.5B": 0.494e9, "Qwen/Qwen2.5-1.5B": 1.54e9,
    "Qwen/Qwen2.5-7B": 7.61e9, "mistralai/Mistral-7B-v0.1": 7.24e9, "meta-llama/Llama-2-7b-hf": 6.74e9,
    "meta-llama/Llama-2-13b-hf": 13.0e9, "google/gemma-2b": 2.51e9, "google/gemma-7b": 8.54e9,
    "microsoft/Phi-3-mini-4k-instruct": 3.82e9, "microsoft/Phi-3-medium-4k-instruct": 14.0e9, "meta-llama/Llama-2-70b-hf": 69.0e9, "meta-llama/Meta-Llama-3-70B": 70.6e9,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_known_config_param_counts(name):
    assert abs(C.model_shape(name).num_params() / PUBLISHED[name] - 1) < 0.01


@pytest.mark.parametrize("config", [
    "Qwen/Qwen2.5-0.5B", "mistralai/Mistral-7B-v0.1", "google/gemma-2b", "microsoft/Phi-3-mini-4k-instruct",
    dict(model_type="qwen3", vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False),
])
def test_formula_equals_real_model_count(config):
    from transformers import AutoModelForCausalLM

    cfg = ftkit.config_for(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert C.model_shape(config).num_params() == model.num_parameters()


@pytest.mark.parametrize("double_quant", [True, False])
def test_nf4_bytes_equal_what_bitsandbytes_stores(double_quant):
    """nf4_bytes against the tensors bitsandbytes really keeps: packed codes, absmax (8-bit + fp32 scales with double
    quantization, fp32 without); a wrong formula (e.g. fp32 absmax with double quant) fails."""
    import bitsandbytes.functional as F

    n = 64 * 4096 + 64 * 7  # not a multiple of 256 blocks, so the rounding counts
    packed, state = F.quantize_4bit(torch.randn(n), quant_type="nf4", compress_statistics=double_quant)
    stored = packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
    if double_quant:
        stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    assert E.nf4_bytes(n, double_quant=double_quant) == stored
    bits = ftkit.methods.double_quant_bits(double_quant=double_quant)  # the per-weight formula taught in 1.2
    assert 8 * E.nf4_bytes(n, double_quant=double_quant) / n == pytest.approx(bits, abs=2e-3)
    assert bits == pytest.approx(4.127 if double_quant else 4.5, abs=5e-4)


def test_fits_on():
    assert E.fits_on(10 * M.GB)["T4 16 GB"]
    assert not E.fits_on(14.5 * M.GB)["T4 16 GB"]  # 14.75 GiB minus 1 GiB headroom
    assert E.fits_on(14.5 * M.GB, headroom_gib=0.0)["T4 16 GB"]
    fits = E.fits_on(M.MemoryBreakdown(30 * M.GB, 0, 0, 0))
    assert [name for name, ok in fits.items() if ok] == ["A100 40 GB", "A6000/L40S 48 GB", "A100 80 GB", "H100 80 GB"]


def test_fit_table():
    rows = E.fit_table(["HuggingFaceTB/SmolLM2-135M", "meta-llama/Llama-2-70b-hf"], seq_len=512, batch_size=1)
    by = {(r["model"].split("/")[-1], r["method"]): r for r in rows}
    assert len(rows) == 6
    assert by["SmolLM2-135M", "qlora"]["T4 16 GB"]
    assert by["Llama-2-70b-hf", "full"]["smallest_gpu"] is None
    assert by["Llama-2-70b-hf", "qlora"]["A100 80 GB"] and not by["Llama-2-70b-hf", "qlora"]["A100 40 GB"]
    totals = [by["Llama-2-70b-hf", m]["total_gib"] for m in H.METHODS]
    assert totals == sorted(totals, reverse=True)  # full > lora > qlora


def test_master_weights_add_an_fp32_copy_to_bf16_full_ft_only():
    shape = C.model_shape("meta-llama/Llama-2-7b-hf")
    kw = dict(seq_len=512, batch_size=1, precision="bf16", optimizer="adamw_8bit")
    pure, kept = (E.estimate_memory(shape, "full", master_weights=m, **kw) for m in (False, True))
    assert kept.optimizer - pure.optimizer == 4 * shape.num_params()  # the fp32 copy the optimizer updates
    assert (kept.weights, kept.gradients) == (pure.weights, pure.gradients)
    for method, extra in (("lora", dict(**kw)), ("full", dict(kw, precision="fp32"))):  # fp32 already: no copy
        assert E.estimate_memory(shape, method, master_weights=True, **extra) == \
            E.estimate_memory(shape, method, **extra)
    mixed = dict(seq_len=512, batch_size=1, mixed_precision=True)
    assert E.estimate_memory(shape, "full", master_weights=True, **mixed) == E.estimate_memory(shape, "full", **mixed)


def test_breakdown_format():
    b = M.MemoryBreakdown(weights=2 * M.GB, gradients=M.MB, optimizer=0, activations=3 * M.MB)
    assert b.total == 2 * M.GB + 4 * M.MB
    assert b.as_dict()["total"] == b.total and b.as_dict()["peak_gpu"] is None
    assert "2.00 GB" in str(b) and "weights" in str(b)


def test_clear_errors():
    with pytest.raises(ValueError, match="Unknown method"):
        E.estimate_memory(SMOL, "dora", seq_len=64, batch_size=1)
    with pytest.raises(ValueError, match="seq_len"):
        E.estimate_memory(SMOL, "lora", seq_len=0, batch_size=1)
    with pytest.raises(ValueError, match="optimizer"):
        E.estimate_memory(SMOL, "lora", seq_len=64, batch_size=1, optimizer="sgd")
    with pytest.raises(ValueError, match="target_modules"):
        E.estimate_memory(SMOL, "lora", seq_len=64, batch_size=1, target_modules=["qkv"])
    with pytest.raises(ValueError, match="model_type") as err:
        C.model_shape(dict(SMOL, model_type="gpt2"))
    assert "gemma" in str(err.value) and "phi3" in str(err.value)  # the message lists the covered families
    with pytest.raises(ValueError, match="rope_scaling"):
        C.model_shape(dict(EXACT_FAMILIES["phi3"], rope_scaling={"type": "longrope"}))
    with pytest.raises(ValueError, match="target_modules"):  # Phi-3 has no q_proj: its names are fused
        E.estimate_memory(EXACT_FAMILIES["phi3"], "lora", seq_len=64, batch_size=1, target_modules=["q_proj"])


def test_load_config(tmp_path, monkeypatch):
    cfg = ftkit.config_for("Qwen2.5-0.5B")
    assert (cfg.model_type, cfg.hidden_size, cfg.num_key_value_heads) == ("qwen2", 896, 2)
    cfg.save_pretrained(tmp_path)
    assert ftkit.config_for(tmp_path).hidden_size == 896
    assert ftkit.config_for(tmp_path / "config.json").hidden_size == 896
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="offline"):
        ftkit.config_for("no-such-org/no-such-model")


def test_estimate_peak_is_at_least_the_weights():
    est = E.estimate_memory("Qwen/Qwen2.5-0.5B", "qlora", seq_len=512, batch_size=4)
    peak = E.estimate_peak(est, "Qwen/Qwen2.5-0.5B", seq_len=512, batch_size=4)
    assert est.weights + est.activations < peak
    assert math.isclose(peak - est.weights - est.optimizer - est.activations, 8 * 4 * 512 * 151936)


def test_base_weight_bytes_equals_a_loaded_model():
    model = M.random_model(SMOL, "full", precision="bf16", seed=0)
    assert E.base_weight_bytes(SMOL, False, "bf16") == M.param_bytes(model)
    assert E.base_weight_bytes(SMOL, False, "fp32") == 2 * M.param_bytes(model) - 2 * (64 // 2) * 4  # buffers stay fp32
    nf4 = E.base_weight_bytes(SMOL, True, "bf16")
    assert nf4 < M.param_bytes(model) and nf4 < E.base_weight_bytes(SMOL, True, "bf16", other_precision="fp32")
