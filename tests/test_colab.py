"""The capstone's helpers (ftkit.capstone) and the learner's-data loader, off Colab, on the tiny model."""

import dataclasses
import json

import pytest

import ftkit
from ftkit.chapters import capstone as colab
from ftkit.core import runtime
from ftkit.core.data import load_user_dataset, score_text


def test_checkpoints_stay_local_and_drive_is_not_mounted_off_colab(capsys):
    assert runtime.mount_drive() is False
    assert "Not on Colab" in capsys.readouterr().out
    assert colab.checkpoint_dir("run").as_posix() == "outputs/run"


def test_recipe_on_a_t4_uses_fp16_and_paged_8bit_adamw(profile):
    t4 = dataclasses.replace(ftkit.PROFILES["t4"])  # get_profile("t4") refuses without CUDA
    hp = colab.capstone_recipe(t4)
    assert isinstance(hp, ftkit.Hyperparameters) and t4.precision == "fp16"
    assert hp.optim == "paged_adamw_8bit" and hp.gradient_checkpointing and hp.lora_r == 16 and hp.alpha == 32
    assert hp.learning_rate == 2e-4 and hp.target_modules == "all-linear"
    assert hp.max_steps == t4.max_steps and hp.batch_size * hp.gradient_accumulation_steps == t4.batch_size
    cpu = colab.capstone_recipe(profile)
    assert cpu.optim == "adamw_torch" and cpu.batch_size == profile.batch_size  # no CUDA: no bitsandbytes optimizer


def test_plan_accepts_the_7b_on_a_t4_and_refuses_a_70b_with_the_fix():
    t4 = dataclasses.replace(ftkit.PROFILES["t4"])
    recipe = colab.capstone_recipe(t4)
    # under fp16 the capstone trains peft's standard preparation (fp32 embeddings, head and norms: a residual stream
    # that cannot overflow fp16), and that still fits a T4 with a GiB to spare
    estimate, fits, message = colab.plan_memory("Qwen/Qwen2.5-7B-Instruct", recipe, t4, gpu_gib=colab.T4_GIB)
    assert fits and message.startswith("fits") and 8 * 2**30 < estimate["peak"] <= (colab.T4_GIB - 1) * 2**30
    standard, *_ = colab.plan_memory("Qwen/Qwen2.5-7B-Instruct", recipe, t4, gpu_gib=colab.T4_GIB,
                                     upcast_frozen_to_fp32=True)
    lean, *_ = colab.plan_memory("Qwen/Qwen2.5-7B-Instruct", recipe, t4, gpu_gib=colab.T4_GIB,
                                 upcast_frozen_to_fp32=False)
    assert standard == estimate and 5 * 2**30 < lean["peak"] <= 8 * 2**30  # lean QLoRA: <= 8 GiB
    assert standard["peak"] - lean["peak"] > 2 * 2**30  # peft's fp32 upcast of 1.09 B embedding/head weights
    estimate, fits, message = colab.plan_memory("meta-llama/Llama-2-70b-hf", recipe, t4, gpu_gib=colab.T4_GIB)
    assert not fits and "does NOT fit" in message and colab.FAST_MODEL in message
    _, fits, message = colab.plan_memory("Qwen/Qwen2.5-7B-Instruct", recipe, t4, gpu_gib=10.0)
    assert not fits and "replace(hp, batch_size=1)" in message  # a smaller batch is offered when it fits


def test_plan_on_this_machine_for_the_builtin_model(profile):
    _, fits, message = colab.plan_memory("smollm2-135m", colab.capstone_recipe(profile), profile)
    assert fits and "RAM" in message


def test_live_loss_runs_inside_a_short_experiment(profile, tiny_data):
    live = colab.LiveLoss(every=1)
    assert live.show is False  # not in a notebook: it records, never draws
    ftkit.run_experiment("qlora", profile=profile, model="tiny-random", data=tiny_data, max_steps=3, eval_every=2,
                         batch_size=4, save=False, score_splits=(), progress=False, callbacks=[live])
    assert [step for step, _ in live.train] == [1, 2, 3] and live.eval[0][0] == 2
    assert live.text.startswith("step 3/3") and "remaining" in live.text


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_user_dataset_from_jsonl_and_csv(tmp_path):
    rows = [{"input": f"question {i}", "output": f"answer {i}"} for i in range(20)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    data = load_user_dataset(tmp_path / "d.jsonl", test_size=0.1)
    assert {k: len(v) for k, v in data.items()} == {"train": 16, "validation": 2, "test": 2}
    row = data["test"][0]
    assert row["messages"][0]["role"] == "user" and row["messages"][1]["content"] == row["answer"]
    (tmp_path / "d.csv").write_text("q,a\n" + "".join(f"what is {i}?,{i}\n" for i in range(10)))
    data = load_user_dataset(tmp_path / "d.csv", input_column="q", output_column="a")
    assert sum(len(v) for v in data.values()) == 10 and data["train"][0]["answer"].isdigit()


def test_user_dataset_errors_name_the_columns_and_the_empty_file(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "x", "completion": "y"}] * 5)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['input', 'output'\].*\['prompt', 'completion'\]"):
        load_user_dataset(tmp_path / "d.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_user_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "header.csv").write_text("input,output\n")
    with pytest.raises(ValueError, match="is empty"):
        load_user_dataset(tmp_path / "header.csv")


def test_score_text_is_exact_match_of_the_text():
    assert score_text([" Paris ", "Rome"], ["Paris", "Milan"]) == {"exact_match": 0.5, "n": 2}


def test_push_to_hub_off_colab_is_a_clean_message(capsys):
    assert colab.push_to_hub(object(), "me/adapter") is None
    assert "Not on Colab" in capsys.readouterr().out


def test_saved_adapter_reloads_and_merges_to_the_same_model(profile, tiny_data, tmp_path):
    result = ftkit.run_experiment("qlora", profile=profile, model="tiny-random", data=tiny_data, max_steps=2,
                                  batch_size=4, output_dir=str(tmp_path / "run"), score_splits=(), progress=False)
    tokenizer = ftkit.load_tokenizer("tiny-random")
    prompts = [row["messages"][:-1] for row in tiny_data["test"].select(range(2))]
    trained = colab.prompt_logits(result.trained_model, tokenizer, prompts, profile.precision)
    adapter = tmp_path / "run" / "final"
    reloaded = colab.reload_adapter("tiny-random", adapter, precision=profile.precision, device="cpu")
    assert colab.max_logit_diff(trained, colab.prompt_logits(reloaded, tokenizer, prompts, profile.precision)) < 1e-4
    merged, message = colab.merge_adapter("tiny-random", adapter, tmp_path / "merged")
    assert merged is not None and (tmp_path / "merged" / "config.json").exists(), message
