"""ftkit.Hyperparameters: defaults per profile and method, keyword overrides, num_epochs, use_rslora, keep_model."""

from dataclasses import replace

import pytest

import ftkit
from ftkit.core.hparams import NAMES, with_overrides


def test_defaults_per_method_and_profile():
    for name in ("ci", "cpu"):
        profile = ftkit.get_profile(name)
        lora, full = ftkit.default_hyperparameters("lora", profile), ftkit.default_hyperparameters("full", profile)
        assert (lora.learning_rate, full.learning_rate) == (1e-3, 1e-5)  # what `make course` has always used
        assert ftkit.default_hyperparameters("qlora", profile).learning_rate == 1e-3
        assert lora.max_steps == profile.max_steps and lora.batch_size == profile.batch_size
        assert lora.num_epochs is None and lora.lora_alpha is None and lora.alpha == 2 * lora.lora_r
    assert ftkit.default_hyperparameters("lora", ftkit.get_profile("cpu")).max_steps == 80
    with pytest.raises(ValueError, match="Unknown method 'lor'"):
        ftkit.default_hyperparameters("lor", ftkit.get_profile("ci"))


def test_fields_are_the_course_vocabulary():
    assert NAMES == ("learning_rate", "max_steps", "num_epochs", "batch_size", "gradient_accumulation_steps", "lora_r",
                     "lora_alpha", "lora_dropout", "use_rslora", "target_modules", "weight_decay", "warmup_steps",
                     "lr_scheduler", "optim", "gradient_checkpointing", "seed", "completion_only_loss", "use_dora",
                     "loraplus_lr_ratio", "neftune_noise_alpha", "padding_free")


@pytest.mark.parametrize("changes, message", [
    ({"loraplus_lr_ratio": 0.5}, "B's rate over A's"), ({"neftune_noise_alpha": 0.0}, "neftune_noise_alpha"),
])
def test_impossible_variant_settings_are_refused(profile, changes, message):
    with pytest.raises(ValueError, match=message):
        replace(ftkit.default_hyperparameters("lora", profile), **changes)


@pytest.mark.parametrize("changes", [{"use_dora": True}, {"loraplus_lr_ratio": 16.0}])
def test_adapter_variants_are_refused_for_full_fine_tuning(profile, changes):
    with pytest.raises(ValueError, match="full fine-tuning has none"):
        ftkit.run_experiment("full", profile=profile, **changes)


def test_overrides_and_alpha_follow_r(profile):
    hp = ftkit.default_hyperparameters("lora", profile)
    small = replace(hp, lora_r=8)
    assert small.alpha == 16 and small.as_dict()["lora_alpha"] == 16  # None means 2 r, whatever r becomes
    assert replace(hp, lora_r=8, lora_alpha=8).alpha == 8
    assert with_overrides(hp, {"learning_rate": 3e-4}).learning_rate == 3e-4
    with pytest.raises(TypeError, match="lerning_rate.*learning_rate, max_steps"):
        with_overrides(hp, {"lerning_rate": 3e-4})


@pytest.mark.parametrize("change, message", [
    (dict(learning_rate=0), "learning_rate must be > 0"),
    (dict(batch_size=0), "batch_size"),
    (dict(lora_r=0), "lora_r must be a positive integer"),
    (dict(lora_alpha=-1), "lora_alpha must be positive"),
    (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(warmup_steps=12), "warmup_steps"),
    (dict(max_steps=None), "max_steps .* or num_epochs"),
    (dict(num_epochs=2), "not both"),
    (dict(max_steps=None, num_epochs=0), "num_epochs must be > 0"),
])
def test_impossible_values_are_refused_with_what_to_do(profile, change, message):
    with pytest.raises(ValueError, match=message):
        replace(ftkit.default_hyperparameters("lora", profile), **change)


def test_num_epochs_replaces_the_default_steps_and_both_is_an_error(profile):
    hp = ftkit.default_hyperparameters("lora", profile)
    epochs = with_overrides(hp, {"num_epochs": 2})
    assert epochs.max_steps is None and epochs.num_epochs == 2
    assert with_overrides(epochs, {"max_steps": 5}).num_epochs is None
    with pytest.raises(ValueError, match="drop max_steps to train for epochs, or num_epochs"):
        with_overrides(hp, {"num_epochs": 2, "max_steps": 5})
    with pytest.raises(ValueError, match="not both"):
        ftkit.run_experiment("lora", profile=profile, model="tiny-random", num_epochs=1, max_steps=3)
    # 32 examples, batches of 4, 2 accumulated: 4 updates per epoch (the Trainer rounds a last partial batch up)
    assert replace(epochs, batch_size=4, gradient_accumulation_steps=2, num_epochs=1.5).steps(32) == 6
    assert replace(epochs, batch_size=5, gradient_accumulation_steps=1, num_epochs=1).steps(32) == 7


def test_unknown_keyword_is_refused_before_any_loading(profile, tiny_data):
    with pytest.raises(TypeError, match="lora_rank.*lora_r"):
        ftkit.run_experiment("lora", profile=profile, model="tiny-random", data=tiny_data, lora_rank=8)


def test_num_epochs_trains_the_steps_it_implies_and_keep_model(profile, tiny_data):
    """2 epochs of 32 examples in batches of 4 x 2 accumulated = ceil(2 * 32 / 8) = 8 updates."""
    hp = replace(ftkit.default_hyperparameters("lora", profile), max_steps=None, num_epochs=2, batch_size=4,
                 gradient_accumulation_steps=2)
    r = ftkit.run_experiment("lora", hp, profile=profile, model="tiny-random", data=tiny_data, eval_every=4,
                             score_splits=(), save=False, progress=False, keep_model=False, lora_r=4)
    assert len(tiny_data["train"]) == 32
    assert r.losses("train_loss")[0] == list(range(1, 9)) and hp.steps(32) == 8  # what the Trainer ran, counted
    assert r.trained_model is None  # keep_model=False: a sweep keeps numbers, not models
    assert r.hyperparameters == {**hp.as_dict(), "lora_r": 4, "lora_alpha": 8}  # the override, alpha resolved
    assert r.trainable_params > 0


@pytest.mark.parametrize("use_rslora, scale", [(False, 16 / 4), (True, 16 / 2)])
def test_use_rslora_reaches_peft(use_rslora, scale):
    model, _ = ftkit.load_model("tiny-random", "lora", lora_r=4, lora_alpha=16, use_rslora=use_rslora)
    scalings = {m.scaling["default"] for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)}
    assert scalings == {scale}
    hp = ftkit.Hyperparameters(**{**ftkit.default_hyperparameters("lora").as_dict(), "lora_r": 4, "lora_alpha": 16,
                                  "use_rslora": use_rslora})
    assert hp.scaling == scale


def test_settings_are_resolved_once_and_passed_on_whole(profile, monkeypatch):
    """run_experiment resolves its settings once; what it hands on (to loading, to the trainer) is that object, not
    keywords to resolve again. load_model takes only the settings that shape a model."""
    from ftkit.core import hparams, train

    hp = ftkit.default_hyperparameters("lora", profile)
    assert with_overrides(hp, {}) is hp  # nothing to override: the same object, checked once already
    calls = []
    monkeypatch.setattr(train, "resolve", lambda *a, **k: calls.append(a) or hparams.resolve(*a, **k))
    seen = {}

    def stop(*args, hp=None, **kwargs):
        seen["hp"] = hp
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(train, "load_model", stop)
    with pytest.raises(RuntimeError, match="stop before loading"):
        ftkit.run_experiment("lora", hp, profile=profile, model="tiny-random", lora_r=4)
    assert len(calls) == 1 and seen["hp"].lora_r == 4 and seen["hp"].alpha == 8
    with pytest.raises(TypeError, match="learning_rate.*training settings go to run_experiment"):
        ftkit.load_model("tiny-random", "lora", learning_rate=1e-3)


def test_the_training_seed_does_not_choose_the_data(profile, monkeypatch):
    """seed is the training's (adapter init, batch order, dropout); the default dataset's records come from
    data_seed, 0 unless given: two seeds compare on the same data."""
    from ftkit.core import train

    asked = []

    def fake_dataset(profile, seed=0):
        asked.append(seed)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(train, "profile_dataset", fake_dataset)
    for kwargs in (dict(seed=1), dict(seed=2, data_seed=5)):
        with pytest.raises(RuntimeError, match="stop before training"):
            ftkit.run_experiment("lora", profile=profile, model="tiny-random", **kwargs)
    assert asked == [0, 5]
