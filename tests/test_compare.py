"""The course's main job (ftkit.methods.compare_methods, `python -m ftkit compare`) on the tiny random model, 2 steps."""

import copy
from dataclasses import replace

import pytest

import ftkit
from ftkit.chapters.methods import compare
from ftkit.chapters.methods.verdicts import table_verdicts as verdicts_of
from ftkit.__main__ import main


@pytest.fixture(scope="module")
def comp(profile):
    small = replace(profile, n_train=16, n_eval=8, batch_size=4, eval_every=2, gen_batch_size=8)
    return compare.compare_methods(small, model="tiny-random", steps=2, progress=False)


def test_all_three_methods_with_a_memory_breakdown(comp):
    assert set(comp.results) == set(comp.memory) == {"full", "lora", "qlora"}
    for method, mem in comp.memory.items():
        assert mem.weights > 0 and mem.gradients > 0 and mem.optimizer > 0 and mem.activations > 0, method
        assert comp.results[method].trained_model is None  # dropped, so the next method's memory is its own
    assert comp.memory["full"].gradients > comp.memory["lora"].gradients  # all weights vs adapters only
    assert comp.weight_dtypes["qlora"].get("uint8", 0) > 0  # the 4-bit base really is packed
    assert {"exact_match", "eval_loss"} <= set(comp.before)
    assert comp.batch_tokens[0] == 4 and set(comp.seconds) == {"base", "full", "lora", "qlora", "full at its best rate",
                                                                   "speed"}
    assert set(comp.speed.rates) == {"full", "lora", "qlora"} and len(comp.speed.rates["lora"]) == 3
    # full FT trained once more at its own best rate (chapter 2's sweep), same steps, scored
    assert comp.full_best.hyperparameters["learning_rate"] == ftkit.core.hparams.SWEPT_BEST_LEARNING_RATE["full"]
    assert comp.full_best.hyperparameters["max_steps"] == comp.results["full"].hyperparameters["max_steps"]
    assert "full_best" in compare.facts(comp)
    assert set(comp.checkpointing) == {"full", "lora", "qlora"}
    # QLoRA trained lean; peft's standard preparation, measured beside it, upcasts the 16-bit frozen weights to fp32
    lean, standard = comp.qlora_preparations["lean"].weights, comp.qlora_preparations["standard"].weights
    assert comp.qlora_preparations["lean"] is comp.memory["qlora"]  # bf16: the lean one is the one trained
    assert standard > lean if comp.profile.precision != "fp32" else standard == lean


def test_theory_table_has_every_row_and_a_verdict_each(comp):
    table, said = compare.theory_table(comp), {}
    for row in compare.THEORY_ROWS:
        line = next(line for line in table.splitlines() if line.startswith(f"| **{row}**"))
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 5 and all(cells), line
        said[row] = cells[-1]
    # the table shows each row's verdict on this run's numbers (the rules themselves are flipped with made-up numbers
    # in the tests below), with its outcome where the theory's table has its claim
    for row, said_by_rule in verdicts_of(compare.facts(comp)).items():
        assert said[row] == said_by_rule.outcome, row
    assert "→" in compare.comparison_table(comp)  # before -> after


def test_png_is_written_where_asked(comp, tmp_path):
    path = compare.save_plot(comp, tmp_path / "out")
    assert path.parent == tmp_path / "out" and path.read_bytes()[:4] == b"\x89PNG"


def test_cli_prints_both_tables_and_saves_the_plot(comp, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare, "compare_methods", lambda *a, **k: comp)
    assert main(["compare", "--model", "tiny-random", "--steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| **Use Case**" in out and "| tokens / second |" in out and str(tmp_path / "compare.png") in out


GIB = 1024**3


def made_up_facts():
    """Numbers shaped like a CPU run of SmolLM2-135M, made up so each verdict can be flipped by hand."""
    common = dict(total=134_515_008, em_before=0.0, loss_before=2.3, optim="adamw_torch", packed_4bit=0)
    return {
        "device": "cpu", "precision": "bf16",
        "estimate_7b": {m: {"smallest_gpu": g, "total_gib": t, "weights_gib": w, "params_b": 7.6}
                        for m, g, t, w in (("full", None, 117, 57), ("lora", "L4 24 GB", 19, 14),
                                           ("qlora", "T4 16 GB", 10, 5.4))},
        "full": {**common, "trainable": 134_515_008, "weights": 540e6, "gradients": 540e6, "optimizer": 1080e6,
                 "activations": 600e6, "memory": 2760e6, "tokens_per_s": 200, "saved": 540e6, "lr": 1e-5,
                 "em_after": 0.1, "loss_after": 1.0},
        "lora": {**common, "trainable": 4_884_480, "weights": 290e6, "gradients": 20e6, "optimizer": 40e6,
                 "activations": 500e6, "memory": 850e6, "tokens_per_s": 210, "saved": 19e6, "lr": 1e-3,
                 "em_after": 0.6, "loss_after": 0.3},
        "qlora": {**common, "trainable": 4_884_480, "weights": 110e6, "gradients": 20e6, "optimizer": 40e6,
                  "activations": 500e6, "memory": 670e6, "tokens_per_s": 170, "saved": 19e6, "lr": 1e-3,
                  "em_after": 0.55, "loss_after": 0.35, "packed_4bit": 40e6},
    }


def table_verdicts(f):
    """The table's verdicts as a learner reads them: "<outcome>: <detail>"."""
    return {row: str(v) for row, v in verdicts_of(f).items()}


def test_speed_verdict_goes_three_ways_on_interleaved_rounds():
    f = made_up_facts()  # one tokens/s per method (a run's own): no noise measured, so the verdict is not settled
    said = table_verdicts(f)["Training Speed"]
    assert said.startswith("not settled at this size: LoRA runs at ×1.05") and "no noise measured" in said
    assert "slightly slower" in said  # the detail still reads the one value
    f["speed"] = {"full": [200, 210, 190, 205, 195], "lora": [400, 425, 375, 415, 390],  # LoRA x2 in every round,
                  "qlora": [200, 210, 190, 205, 195]}  # QLoRA at half LoRA's
    said = table_verdicts(f)["Training Speed"]
    assert said.startswith("as the theory says: LoRA runs at ×2.00") and "more than 'slightly'" in said
    f["speed"]["lora"] = [210, 220, 200, 215, 205]  # x1.05 in every round: settled below x1.2
    f["speed"]["qlora"] = [230, 200, 180, 230, 190]  # x1.10, x0.91, x0.90, x1.07, x0.93 of LoRA: no clear slowdown
    said = table_verdicts(f)["Training Speed"]
    assert said.startswith("differs here: LoRA runs at ×1.05") and "not ×1.2 faster" in said
    assert "QLoRA is not measurably slower than LoRA" in said
    f["speed"]["qlora"] = [200, 209, 190, 204, 195]  # x0.95 in every round: slower, settled, and only slightly
    assert "QLoRA is slightly slower than LoRA, ×0.95" in table_verdicts(f)["Training Speed"]
    f["speed"]["lora"] = [300, 210, 180, 420, 240]  # x1.5, x1.0, x0.95, x2.05, x1.23: the rounds disagree
    said = table_verdicts(f)["Training Speed"]
    assert said.startswith("not settled at this size: LoRA runs at ×1.29") and "within the noise" in said


def test_memory_storage_and_use_case_verdicts_flip():
    f = made_up_facts()
    said = table_verdicts(f)
    assert said["VRAM Usage"].startswith("as the theory says") and "not ~1/4" in said["VRAM Usage"]
    assert said["Storage"].startswith("as the theory says: the LoRA adapter is 28x smaller") and "same size" in said["Storage"]
    assert "an adapter was enough" in said["Use Case"] and "brings a 7B model to one small GPU" in said["Use Case"]
    g = copy.deepcopy(f)
    g["qlora"]["memory"], g["qlora"]["weights"] = 900e6, 60e6  # QLoRA now above LoRA; weights near 1/4
    said = table_verdicts(g)
    assert said["VRAM Usage"].startswith("differs here") and "about 1/4" in said["VRAM Usage"]
    assert "largest difference between LoRA and QLoRA is in weights" in said["VRAM Usage"]
    h = copy.deepcopy(f)
    h["qlora"]["activations"], h["qlora"]["memory"] = 800e6, 970e6  # fp32 activations outweigh the 4-bit saving
    said = table_verdicts(h)["VRAM Usage"]
    assert said.startswith("differs here") and "QLoRA needs 14 % more than LoRA here" in said
    assert "activations are 286.1 MB larger" in said and "LoRA 19 GiB vs QLoRA 10 GiB" in said
    h["qlora"]["memory"] = 800e6
    assert "QLoRA saves only 6 % over LoRA here" in table_verdicts(h)["VRAM Usage"]
    s = copy.deepcopy(f)  # lean QLoRA (670 MB) beside peft's standard preparation, measured on the same batch
    s["qlora"]["standard"] = {"weights": 160e6, "activations": 800e6, "total": 1020e6}
    said = table_verdicts(s)["VRAM Usage"]
    assert said.startswith("as the theory says") and "needs 972.7 MB on the same batch, 333.8 MB more" in said
    assert "activations +286.1 MB" in said and "20 % more than LoRA" in said
    s["qlora"]["standard"]["total"] = 800e6  # a standard preparation under LoRA's memory: no "more than LoRA"
    assert "more than LoRA" not in table_verdicts(s)["VRAM Usage"]
    t = copy.deepcopy(f)  # under fp16 (a T4) QLoRA trains the standard preparation; the lean one is measured beside it
    t["qlora"]["preparation"], t["qlora"]["lean"] = "standard", {"weights": 60e6, "activations": 400e6, "total": 500e6}
    said = table_verdicts(t)["VRAM Usage"]
    assert "keeps its frozen non-4-bit weights in fp32" in said and "lean it would need 476.8 MB" in said
    g["qlora"]["saved"] = 9.5e6  # a 16-bit adapter: half LoRA's fp32 one
    assert "×0.50 LoRA's: 1.9 vs 3.9 bytes per adapter parameter" in table_verdicts(g)["Storage"]
    assert "casts a QLoRA adapter to bf16" in table_verdicts(g)["Storage"]
    g["lora"]["saved"] = g["qlora"]["saved"] = 300e6
    assert table_verdicts(g)["Storage"].startswith("differs here")
    g["full"]["em_after"], g["estimate_7b"]["qlora"]["smallest_gpu"] = 0.9, "A100 40 GB"
    said = table_verdicts(g)["Use Case"]
    assert "Full FT scored higher" in said and "even QLoRA does not fit one small GPU" in said
    g["full"]["em_after"] = g["lora"]["em_after"] = g["qlora"]["em_after"] = 0.0
    assert "no method raised exact match" in table_verdicts(g)["Use Case"]


def test_use_case_says_what_full_ft_reaches_at_its_own_rate():
    f = made_up_facts()
    assert "its own best rate" not in table_verdicts(f)["Use Case"]  # no such run: nothing said
    f["full_best"] = {"lr": 1e-4, "loss_after": 0.25, "em_after": 0.7}
    said = table_verdicts(f)["Use Case"]
    assert "At its own best rate (0.0001, chapter 2's sweep) full FT reaches validation loss 0.250" in said
    assert "lower than LoRA's 0.300" in said and "does not learn less" in said
    f["full_best"]["loss_after"] = 0.31
    assert "about the same as LoRA's 0.300" in table_verdicts(f)["Use Case"]
    f["full_best"]["loss_after"] = 0.5
    said = table_verdicts(f)["Use Case"]
    assert "above LoRA's 0.300" in said and "does not learn less" not in said


def test_mechanism_verdict_checks_the_4bit_base_and_the_optimizer():
    f = made_up_facts()
    said = table_verdicts(f)["Mechanism"]
    assert said.startswith("as the theory says") and "no paged optimizer here" in said
    f["qlora"]["packed_4bit"], f["qlora"]["optim"] = 0, "paged_adamw_8bit"
    said = table_verdicts(f)["Mechanism"]
    assert said.startswith("differs here") and "paged" not in said


def test_default_steps_caps_cpu_runs():
    cpu = ftkit.get_profile("cpu")
    assert compare.default_steps(cpu) == ftkit.methods.sizes(cpu).cli_steps < cpu.max_steps  # capped on a CPU
    assert compare.default_steps(ftkit.PROFILES["t4"]) == ftkit.PROFILES["t4"].max_steps  # the GPU's own run


def test_every_chapter_has_sizes_for_every_profile_and_refuses_an_unknown_one():
    import dataclasses

    for chapter in (ftkit.methods, ftkit.hyperparameters, ftkit.overfitting.SETUPS):
        names = set(chapter) if isinstance(chapter, dict) else set(chapter.SIZES)
        assert names == set(ftkit.PROFILES)
    odd = dataclasses.replace(ftkit.PROFILES["cpu"], name="laptop")
    with pytest.raises(ValueError, match="no sizes for profile 'laptop'"):
        ftkit.hyperparameters.sizes(odd)
