"""What a Colab T4 (fp16, CUDA) does differently, checked on the CPU: the T4 emulation (FTKIT_EMULATE=t4), QLoRA's
adapters under fp16, the fp16 overflow guard, greedy decoding whatever a hub model brings, runs that free their model
and optimizer, and a second model shape (issue 20)."""

import dataclasses
import gc
import math
import sys
import weakref

import pytest
import torch
from transformers import TrainerCallback

import ftkit
from ftkit.core import emulation
from ftkit.core import train as T
from ftkit.core.models import adapter_precision, default_upcast


@pytest.fixture
def t4(monkeypatch, profile):
    """The ci profile as the emulated T4 runs it, on the tiny model; the CUDA unscale rule undone afterwards."""
    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_",
                        torch._amp_foreach_non_finite_check_and_unscale_)
    monkeypatch.setenv(emulation.EMULATE_ENV, "t4")
    return dataclasses.replace(ftkit.get_profile("ci"), model="tiny-random")


def short_run(method, profile, data, **kw):
    return ftkit.run_experiment(method, profile=profile, data=data, max_steps=2, batch_size=4, eval_every=2,
                                save=False, score_splits=(), progress=False, **kw)


def test_the_emulated_t4_is_the_ci_sizes_in_fp16_with_another_model(t4, profile):
    emulated = ftkit.get_profile("ci")
    assert emulated.precision == "fp16" and emulated.device == "cpu" and emulated.emulating == "t4"
    assert emulated.max_steps == profile.max_steps and emulated.batch_size == profile.batch_size
    assert ftkit.model_shape(emulated.model).layers != ftkit.model_shape(profile.model).layers


def test_emulation_refuses_a_gpu_profile_and_an_unknown_name(monkeypatch):
    with pytest.raises(ValueError, match="already runs on cuda"):
        emulation.emulated(ftkit.PROFILES["t4"])
    monkeypatch.setenv(emulation.EMULATE_ENV, "v100")
    with pytest.raises(ValueError, match="is not an emulation"):
        ftkit.get_profile("ci")


def test_unscale_refuses_bf16_gradients_as_cuda_does(t4):
    found_inf, inv_scale = torch.zeros(1), torch.ones(1)
    for dtype in (torch.float32, torch.float64, torch.float16):
        torch._amp_foreach_non_finite_check_and_unscale_([torch.ones(3, dtype=dtype)], found_inf, inv_scale)
    with pytest.raises(NotImplementedError, match="not implemented for 'BFloat16'"):
        torch._amp_foreach_non_finite_check_and_unscale_([torch.ones(3, dtype=torch.bfloat16)], found_inf, inv_scale)


def test_qlora_trains_under_the_emulated_t4_with_fp32_adapters_and_a_grad_scaler(t4, tiny_data):
    seen = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            seen["dtypes"] = {p.dtype for p in model.parameters() if p.requires_grad}
            seen["scaler"] = optimizer.scaler

    result = short_run("qlora", t4, tiny_data, callbacks=[Spy()])
    assert seen["dtypes"] == {torch.float32} and isinstance(seen["scaler"], torch.amp.GradScaler)
    assert all(math.isfinite(x) for x in result.losses()[1])


def test_without_the_fp32_cast_qlora_fails_in_the_emulation_as_on_a_t4(t4, tiny_data, monkeypatch):
    # today's main before issue 20: TRL's bf16 adapters stay, and CUDA's unscale refuses their gradients
    monkeypatch.setattr(T, "cast_qlora_adapters", lambda model, precision: model)
    with pytest.raises(NotImplementedError, match="BFloat16"):
        short_run("qlora", t4, tiny_data)


def test_adapter_dtype_and_upcast_rules():
    assert [adapter_precision("qlora", p) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp32", "bf16"]
    assert {adapter_precision("lora", p) for p in ("bf16", "fp16", "fp32")} == {"fp32"}
    assert [default_upcast(p) for p in ("bf16", "fp16", "fp32")] == [False, True, False]
    shape = ftkit.model_shape("Qwen/Qwen2.5-7B")
    kw = dict(seq_len=256, batch_size=4)
    fp16, bf16 = (ftkit.estimate_memory(shape, "qlora", precision=p, **kw) for p in ("fp16", "bf16"))
    assert fp16.gradients == 2 * bf16.gradients  # fp32 adapters under fp16, bf16 under bf16
    lean = ftkit.estimate_memory(shape, "qlora", precision="fp16", upcast_frozen_to_fp32=False, **kw)
    assert fp16.weights - lean.weights == 2 * shape.other_params()  # embeddings, head, norms: 4 bytes, not 2


def test_lora_under_fp16_keeps_the_residual_stream_in_fp32(t4):
    model, tokenizer = ftkit.load_model("tiny-random", "lora", precision="fp16")
    base = model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.float32  # the stream starts in fp32 ...
    assert base.model.norm.weight.dtype == torch.float32
    assert base.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.float16  # ... the matmuls are fp16
    batch = ftkit.course_batch(tokenizer, list(ftkit.load_course_dataset(n_train=4, seed=0)["train"]), 64)
    with ftkit.core.models.forward_autocast(model):
        hidden = model(**batch, output_hidden_states=True).hidden_states
    assert all(h.dtype == torch.float32 for h in hidden)
    assert ftkit.generate_answers(model, tokenizer, [[{"role": "user", "content": "hi"}]], max_new_tokens=3,
                                  progress=False)  # generation outside the Trainer runs too (autocast to fp16)


def test_a_first_loss_that_is_not_finite_stops_an_fp16_run_with_what_to_do():
    guard, state = T.OverflowGuard(), type("State", (), {"global_step": 1})()
    with pytest.raises(FloatingPointError, match="upcast_frozen_to_fp32=True"):
        guard.on_log(None, state, None, logs={"loss": float("nan")})
    guard.on_log(None, state, None, logs={"loss": 2.5})
    state.global_step = 5  # later: a learning rate may diverge on purpose (chapter 2's sweep)
    guard.on_log(None, state, None, logs={"loss": float("inf")})


def test_greedy_scoring_ignores_what_a_hub_model_brings_in_its_generation_config():
    model, tokenizer = ftkit.load_model("tiny-random", "lora")
    prompts = [[{"role": "user", "content": "Ana is 31 and works as a nurse in Lyon."}]]
    plain = ftkit.generate_answers(model, tokenizer, prompts, max_new_tokens=12, progress=False)
    own = model.get_base_model().generation_config
    own.repetition_penalty, own.no_repeat_ngram_size, own.do_sample, own.temperature = 5.0, 1, True, 3.0
    assert ftkit.generate_answers(model, tokenizer, prompts, max_new_tokens=12, progress=False) == plain
    assert own.repetition_penalty == 5.0  # the model's own config is given back as it was


@pytest.mark.parametrize("method", ["full", "qlora"])
@pytest.mark.parametrize("emulated", [False, True])
def test_a_finished_run_frees_its_model_and_optimizer_without_a_garbage_collection(method, emulated, monkeypatch,
                                                                                   profile, tiny_data):
    if emulated:
        monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_",
                            torch._amp_foreach_non_finite_check_and_unscale_)
        monkeypatch.setenv(emulation.EMULATE_ENV, "t4")
    run_profile = dataclasses.replace(ftkit.get_profile("ci"), model="tiny-random")
    refs = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            refs.update(model=weakref.ref(model), optimizer=weakref.ref(optimizer),
                        adamw=weakref.ref(optimizer.optimizer))

    gc.collect()
    gc.disable()
    try:
        short_run(method, run_profile, tiny_data, keep_model=False, callbacks=[Spy()])
        alive = sorted(name for name, ref in refs.items() if ref() is not None)
    finally:
        gc.enable()
    assert alive == []


def test_the_second_shape_is_the_builtin_model_with_twelve_layers():
    short, full = ftkit.model_shape("smollm2-135m-12l"), ftkit.model_shape("smollm2-135m")
    assert (short.layers, full.layers) == (12, 30) and dataclasses.replace(short, layers=30) == full
    model, _ = ftkit.load_model("smollm2-135m-12l", "lora", lora_r=8)
    assert ftkit.count_parameters(model)[0] == ftkit.lora_params(short, 8) != 2_442_240


def test_chapter_4_runs_at_cpu_sizes_in_every_profile():
    cpu = ftkit.scaling.run_sizes(ftkit.PROFILES["cpu"])
    assert ftkit.scaling.run_sizes(ftkit.PROFILES["t4"]) == ftkit.scaling.run_sizes(ftkit.PROFILES["gpu"]) == cpu
    assert ftkit.scaling.run_sizes(ftkit.PROFILES["ci"])["max_steps"] < cpu["max_steps"]


def test_the_colab_estimate_counts_every_notebook_and_chapter_3_trains_its_30_rows_once():
    from ftkit.tools.notebooks import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    import colab_estimate
    import gpu_check

    work = colab_estimate.runs(ftkit.PROFILES["t4"])
    names = (set(gpu_check.notebook_paths()) - {gpu_check.CHAPTER_3, gpu_check.CHAPTER_5}
             | {f"3.{i}" for i in range(1, 7)} | {f"5.{i}" for i in range(1, 5)})
    assert set(work) == names
    rows = sum(w.get("runs", 0) for name, w in work.items() if name.startswith("3."))
    assert rows == 3 * len(ftkit.overfitting.REMEDIES)  # every remedy, three seeds, each trained once (Google Drive)
    minutes = {n: sum(colab_estimate.seconds(w, ftkit.PROFILES["t4"]).values()) / 60 for n, w in work.items()}
    assert max(minutes, key=minutes.get) == "capstone" and all(m > 0.5 for m in minutes.values())  # installs at least


def test_chapter_3_keeps_its_rows_on_google_drive_on_colab(monkeypatch, tmp_path):
    from ftkit.chapters.overfitting import rows
    from ftkit.core import runtime, store

    monkeypatch.delenv(rows.ROWS_ENV, raising=False)
    assert "outputs/overfit" in rows.share_rows()  # not on Colab: beside the notebook, as before
    monkeypatch.setattr(runtime, "DRIVE", tmp_path)
    (tmp_path / "MyDrive").mkdir()
    for module in (runtime, store):  # as if on Colab, with Drive mounted
        monkeypatch.setattr(module, "in_colab", lambda: True)
    monkeypatch.setattr(store, "mount_drive", lambda: True)
    line = rows.share_rows()
    assert rows.rows_dir() == tmp_path / "MyDrive" / "ftkit" / "overfit-rows" and str(rows.rows_dir()) in line
