import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import ftkit
from ftkit.core import builtin, models
from ftkit.core.profiles import cpu_has_bf16


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="smollm2-135m, smollm2-135m-12l, tiny-random"):
        ftkit.load_model("smollm-9000", "lora")


def test_unknown_method():
    with pytest.raises(ValueError, match="full, lora, qlora"):
        ftkit.load_model("tiny-random", "prefix-tuning")


@pytest.mark.parametrize("kwargs, message", [
    (dict(lora_r=0), "positive integer"),
    (dict(lora_r=-4), "positive integer"),
    (dict(lora_alpha=0), "lora_alpha must be positive"),
    (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(precision="fp16"), "fp16 training needs a CUDA GPU"),
])
def test_impossible_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ftkit.load_model("tiny-random", "lora", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_only_device_on_cpu():
    with pytest.raises(RuntimeError, match="Change runtime type"):
        ftkit.load_model("tiny-random", "lora", device="cuda")


def test_qlora_without_bitsandbytes(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        ftkit.load_model("tiny-random", "qlora")


@pytest.mark.parametrize("method, trainable_share", [("full", 1.0), ("lora", None), ("qlora", None)])
def test_methods_set_what_trains(method, trainable_share):
    model, tokenizer = ftkit.load_model("tiny-random", method)
    trainable, total = ftkit.count_parameters(model)
    if trainable_share:
        assert trainable == total
    else:
        assert 0 < trainable < total / 2
        assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_qlora_weights_are_nf4_with_double_quant():
    import bitsandbytes as bnb

    model, _ = ftkit.load_model("tiny-random", "qlora")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "no 4-bit layers"
    state = layers[0].weight.quant_state
    assert state.quant_type == "nf4" and state.nested
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)


def test_unwritable_cache_says_what_to_do(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FTKIT_CACHE", str(blocker / "cache"))
    with pytest.raises(PermissionError, match="FTKIT_CACHE"):
        ftkit.cache_dir()


def _fake_wheel(folder):
    """A wheel-shaped zip whose GGUF file is not the model (what a broken download looks like)."""
    fake = folder / builtin.BUILTIN["wheel"]
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(builtin.BUILTIN["gguf"], b"not a model")
    return fake


def test_corrupted_download_is_refused_and_cache_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path))
    keep = tmp_path / "tiny-random" / "config.json"
    keep.parent.mkdir()
    keep.write_text("{}")
    with pytest.raises(ValueError, match="corrupted.*prefetch"):
        builtin.builtin_model_dir(wheel=_fake_wheel(tmp_path))
    assert not (tmp_path / "smollm2-135m").exists()
    assert keep.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".download-")] == []


def test_full_disk_during_conversion_leaves_cache_as_it_was(monkeypatch, tmp_path):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(builtin, "check_sha256", lambda path, expected: None)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(builtin, "_convert_gguf", disk_full)
    with pytest.raises(OSError, match="No space left.*FTKIT_CACHE"):
        builtin.builtin_model_dir(wheel=_fake_wheel(tmp_path))
    assert not (tmp_path / "smollm2-135m").exists()


def _loss_on(model, enc):
    model.eval()
    with torch.no_grad():
        return model(**enc, labels=enc["input_ids"]).loss.item()


def test_qlora_state_dict_keeps_weights_intact():
    """FINDINGS §3: with the workaround, saving (state_dict) between two eval forwards changes nothing."""
    model, tok = ftkit.load_model("tiny-random", "qlora", precision="bf16" if cpu_has_bf16() else "fp32")
    enc = tok(["Maria Lopez, 34, is a nurse from Lyon."], return_tensors="pt")
    before = _loss_on(model, enc)
    model.state_dict()
    model.state_dict()
    assert _loss_on(model, enc) == before


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16(), reason="the bitsandbytes bug only shows on CPUs with AVX512-BF16")
def test_the_workaround_is_needed(monkeypatch):
    """Without the workaround the same check fails on this CPU: the bug is real, and the test above can fail."""
    monkeypatch.setattr(models, "disable_bnb_cpu_repacking", lambda model: 0)
    model, tok = ftkit.load_model("smollm2-135m", "qlora", precision="bf16")
    enc = tok(["Maria Lopez, 34, is a nurse from Lyon. The quick brown fox jumps."], return_tensors="pt")
    before = _loss_on(model, enc)
    model.state_dict()
    assert abs(_loss_on(model, enc) - before) > 1e-3


@pytest.mark.slow
def test_builtin_model_is_the_real_smollm2():
    model, tok = ftkit.load_model("smollm2-135m", "full")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134_000_000 < ftkit.count_parameters(model)[1] < 135_000_000
    answer = ftkit.generate_answers(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                                    max_new_tokens=12, progress=False)[0]
    assert "Paris" in answer


FIRST_USE = """
import sys, time
from pathlib import Path
from ftkit.core import builtin

def slow_convert(gguf_dir, gguf_name, out_dir):  # stands in for the ~30 s dequantization
    with open(sys.argv[2], "a") as log:
        log.write("converted\\n")
    time.sleep(1.5)
    out_dir.mkdir()
    (out_dir / "config.json").write_text("{}")
    (out_dir / "model.safetensors").write_bytes(b"weights")

builtin.check_sha256 = lambda path, expected: None
builtin._convert_gguf = slow_convert
print(builtin.builtin_model_dir(wheel=sys.argv[1]))
"""


def test_two_processes_on_an_empty_cache_both_get_one_model(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "conversions.log"
    wheel = _fake_wheel(tmp_path)
    env = {**os.environ, "FTKIT_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(wheel), str(log)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().endswith("smollm2-135m")
    assert sorted(p.name for p in (cache / "smollm2-135m").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".smollm2-135m.lock")] == ["smollm2-135m"]
    assert log.read_text().count("converted") == 1  # the second process waited and took the first one's copy


@pytest.mark.parametrize("upcast, frozen_dtype", [(False, torch.bfloat16), (True, torch.float32)])
def test_qlora_preparations_keep_frozen_weights_where_they_say(upcast, frozen_dtype):
    """Lean QLoRA (default) leaves embeddings and norms in the compute dtype; peft's standard one upcasts to fp32."""
    model, _ = ftkit.load_model("tiny-random", "qlora", precision="bf16", upcast_frozen_to_fp32=upcast)
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad and "lora_" not in n
              and type(p).__name__ != "Params4bit"}
    assert any("embed_tokens" in n for n in frozen) and any("norm" in n for n in frozen)
    assert {p.dtype for p in frozen.values()} == {frozen_dtype}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}  # adapters: TRL's bf16


def test_lean_qlora_gets_the_gradients_of_the_standard_preparation():
    """Same adapters, same batch: the lean preparation's loss and adapter gradients match the standard one's
    (bf16 rounding apart), so training starts the same way; a broken gradient path would fail this."""
    runs = {}
    for upcast in (True, False):
        model, tok = ftkit.load_model("tiny-random", "qlora", precision="bf16", upcast_frozen_to_fp32=upcast)
        if upcast:
            torch.manual_seed(0)
            for name, p in model.named_parameters():  # B = 0 at init would leave A without a gradient
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=0.02)
            adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            model.load_state_dict(adapters, strict=False)
        enc = tok(["Maria Lopez, 34, is a nurse from Lyon.", "Tom Berg, 51, is a baker from Oslo."],
                  return_tensors="pt", padding=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        grad = torch.cat([p.grad.float().flatten() for n, p in model.named_parameters() if p.requires_grad])
        runs[upcast] = (loss.item(), grad)
    (loss_std, g_std), (loss_lean, g_lean) = runs[True], runs[False]
    assert g_lean.abs().sum() > 0 and torch.isfinite(g_lean).all()
    assert abs(loss_lean - loss_std) < 0.02 * loss_std
    assert torch.nn.functional.cosine_similarity(g_lean, g_std, dim=0) > 0.99
