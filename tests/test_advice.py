"""Chapter 5's helpers: arms differ from plain LoRA only in what they name, each variant really trains, the exact
checks (accumulation, padding-free, KL) measure what they say, and runs are kept and read back."""

import math
from dataclasses import replace

import pytest

import ftkit
from ftkit.chapters import advice
from ftkit.chapters.advice import runs, sizes

TINY = sizes.Setup(n_train=8, n_eval=2, steps=2, batch_size=4, eval_every=1, seeds=(0,))


@pytest.fixture
def tiny_arms(monkeypatch, tmp_path):
    """The ci setup shrunk to seconds; runs are kept in a temporary folder."""
    monkeypatch.setitem(advice.SETUPS, "ci", TINY)
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path))
    return tmp_path


def test_every_arm_changes_only_what_it_names(profile, tiny_arms):
    plain = advice.hyperparameters_of("plain LoRA", profile).as_dict()
    for name, arm in advice.ARMS.items():
        hp = advice.hyperparameters_of(name, profile).as_dict()
        changed = {k for k in hp if hp[k] != plain[k]}
        expected = set(arm.changes) | ({"learning_rate"} if arm.method == "full" else set())
        assert changed == expected, name
    with pytest.raises(ValueError, match="choose one of"):
        advice.arm_of("GaLore")


def test_the_variants_train_through_the_real_trainer_together(profile, tiny_data):
    """All five switches at once (each alone runs in chapter 5's notebooks): DoRA's magnitudes are trained, the others
    need no new parameter, and the losses stay finite."""
    changes = {"use_dora": True, "loraplus_lr_ratio": 16.0, "neftune_noise_alpha": 5.0, "padding_free": True,
               "completion_only_loss": False}
    result = ftkit.run_experiment("lora", profile=profile, model="tiny-random", data=tiny_data, max_steps=2,
                                  batch_size=4, save=False, score_splits=(), progress=False, **changes)
    assert len(result.losses()[1]) == 2 and all(math.isfinite(v) for v in result.losses()[1])
    names = [n for n, p in result.trained_model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names) and result.hyperparameters["use_dora"]


def test_loraplus_gives_b_its_own_rate(profile):
    hp = replace(ftkit.default_hyperparameters("lora", profile), loraplus_lr_ratio=16.0)
    model, _ = ftkit.load_model("tiny-random", "lora", hp=hp)
    groups = [g for g in ftkit.loraplus_optimizer(model, hp).param_groups if g["params"]]
    assert {g["lr"] for g in groups} == {hp.learning_rate, 16 * hp.learning_rate}
    with pytest.raises(ValueError, match="does not combine"):
        replace(hp, optim="sgd")


def test_padding_free_trains_the_same_first_step_as_padded_batches(profile, tiny_data):
    """Same examples, same order: the first loss (before any update) is the same computation without the padding.
    (A length limit above the tiny model's rows: TRL truncates padded rows to max_length, never padding-free ones.)"""
    fp32 = replace(profile, precision="fp32", max_seq_len=512)
    first = [ftkit.run_experiment("lora", profile=fp32, model="tiny-random", data=tiny_data, max_steps=1, batch_size=4,
                                  save=False, score_splits=(), progress=False, padding_free=free).losses()[1][0]
             for free in (False, True)]
    assert first[0] == pytest.approx(first[1], rel=1e-4)


def test_the_packing_check_tells_kept_apart_from_mixed(tiny_data):
    model, tokenizer = ftkit.load_model("tiny-random", "full", precision="fp32")
    check = advice.packing_check(model, tokenizer, list(tiny_data["train"])[:3])
    assert check["padding_free"] < 1e-4 < 1e-2 < check["one_document"]


def test_the_normalisation_gap_sees_uneven_lengths_only():
    model, tokenizer = ftkit.load_model("tiny-random", "lora", precision="fp32")
    data = advice.uneven_data(n_train=8)
    lengths = [len(r["answer"]) for r in data["train"]]
    assert min(lengths) < 20 < max(lengths)  # a city alone and whole JSON answers
    gap = advice.normalisation_gap(model, tokenizer, list(data["train"]), k=4)
    assert gap["whole_batch"] < 1e-5 and gap["per_micro_batch"] > 0.05 and len(set(gap["tokens"])) > 1
    long_only = [r for r in data["train"] if r["answer"].startswith("{")]
    even = advice.normalisation_gap(model, tokenizer, long_only[:4], k=2)
    assert even["per_micro_batch"] < 0.05 * gap["per_micro_batch"] or len(set(even["tokens"])) > 1
    with pytest.raises(ValueError, match="equal micro-batches"):
        advice.normalisation_gap(model, tokenizer, list(data["train"])[:3], k=2)


def test_kl_is_zero_for_the_base_and_grows_with_a_change(profile):
    model, tokenizer = ftkit.load_model("tiny-random", "lora", precision="fp32")
    texts = advice.GENERAL_TEXTS[:2]
    reference = advice.reference_logprobs("tiny-random", replace(profile, precision="fp32"), texts)
    assert max(advice.general_kl(model, tokenizer, reference, texts)) < 1e-6  # B = 0: the base model's function
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    moved = advice.general_kl(model, tokenizer, reference, texts)
    assert min(moved) > 1e-4
    assert max(advice.general_kl(model, tokenizer, reference, texts, adapters=False)) < 1e-6


def test_an_arm_is_kept_and_read_back(profile, tiny_arms):
    first = advice.arm_run("plain LoRA", profile, model="tiny-random", progress=False)
    again = advice.arm_run("plain LoRA", profile, model="tiny-random", progress=False)
    assert not first.from_cache and again.from_cache and again.test_losses == first.test_losses
    assert len(first.kl) == len(advice.GENERAL_TEXTS) and first.kl_quantized == [] and len(first.general) == 3
    assert list(tiny_arms.glob("plain-LoRA-seed0-*.json"))
    assert runs.run_path("plain LoRA", 0, profile) != runs.run_path("DoRA", 0, profile)
