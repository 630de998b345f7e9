"""Chapter 3's helpers: early stopping keeps the best weights, remedy runs are deterministic, verdicts flip."""

import math

import matplotlib
import pytest

import ftkit
from ftkit.chapters import overfitting as overfit
from ftkit.chapters.overfitting import rows, sizes

matplotlib.use("Agg")

TINY = sizes.Setup(n_train=4, n_eval=2, steps=4, eval_every=2, seeds=(0, 1), lora_r=4)


@pytest.fixture
def tiny_rows(monkeypatch, tmp_path):
    """The ci setup shrunk to seconds on the tiny random model; rows are kept in a temporary folder."""
    monkeypatch.setitem(overfit.SETUPS, "ci", TINY)
    monkeypatch.setattr(rows, "rows_dir", lambda: tmp_path)
    return tmp_path


def test_early_stopping_restores_the_best_weights(profile, tiny_data):
    """A rate far too high for full fine-tuning makes validation loss fall, then rise; patience 2 stops there and the
    model in memory afterwards has exactly the lowest logged validation loss (not the last one)."""
    result = ftkit.run_experiment("full", profile=profile, model="tiny-random", data=tiny_data, learning_rate=0.05,
                                  lr_scheduler="constant", max_steps=8, batch_size=4, eval_every=1,
                                  early_stopping_patience=2, save=False, score_splits=(), progress=False)
    steps, losses = result.losses("eval_loss")
    assert steps[-1] < 8, f"the curve {losses} should rise and stop the run early"
    assert result.restored_step == steps[losses.index(min(losses))] < steps[-1]
    hp = ftkit.Hyperparameters(**result.hyperparameters)
    restored = ftkit.eval_loss(result.trained_model, ftkit.load_tokenizer("tiny-random"), tiny_data, profile, hp)
    assert restored == pytest.approx(min(losses), rel=1e-4)
    assert restored != pytest.approx(losses[-1], rel=1e-3)
    stop, best = overfit.early_stop(losses, 2)  # the replay of the rule agrees with the real callback
    assert (steps[stop], steps[best]) == (steps[-1], result.restored_step)
    assert overfit.callback_stop(losses, 2) == stop  # and so does the library's callback, driven on the curve


def test_a_remedy_run_is_deterministic_and_cached(profile, tiny_rows):
    """LoRA dropout draws random masks: the same seed gives the same run, another seed another one."""
    one = overfit.overfit_run("lora dropout", profile, seed=0, model="tiny-random", reuse=False, progress=False)
    two = overfit.overfit_run("lora dropout", profile, seed=0, model="tiny-random", reuse=False, progress=False)
    assert one.history == two.history and one.answers == two.answers and one.adapter == two.adapter
    other = overfit.overfit_run("lora dropout", profile, seed=1, model="tiny-random", reuse=False, progress=False)
    assert other.losses("train_loss")[1] != one.losses("train_loss")[1]
    again = overfit.overfit_run("lora dropout", profile, seed=0, model="tiny-random", progress=False)
    assert again.as_dict() == two.as_dict()  # read back from the file the last run wrote
    assert again.from_cache and not two.from_cache  # the scoreboard says which rows it read back
    assert len(list(tiny_rows.glob("lora-dropout-seed*.json"))) == 2
    # what every row measures: each test row and clean training row at the kept and the last checkpoint, the wrong
    # label's log-odds (TINY: 4 records, a quarter of them wrong), exact match of the kept model on test and held-out
    assert [len(one.per_row["test"][w]) for w in ("kept", "last")] == [TINY.n_eval] * 2
    assert len(one.per_row["train"]["last"]) == 3 and len(one.noise_margins["kept"]) == 1
    assert set(one.test) >= {"exact_match"} and one.kept_step == one.best_step


def test_every_row_is_judged_on_its_kept_checkpoint(profile, tiny_rows):
    """KeepCheckpoints holds the lowest-validation weights in memory; the row's per-row test losses at "kept" are
    those of that checkpoint, "last" those the run ended with, and measuring them leaves the model as it was."""
    row = overfit.overfit_run("weight decay 10", profile, model="tiny-random", keep_model=True, progress=False)
    net, tokenizer = row.trained_model, ftkit.load_tokenizer("tiny-random")
    data = overfit.overfit_data(profile, "weight decay 10")
    end = ftkit.row_losses(net, tokenizer, list(data["test"]))
    assert end == pytest.approx(row.per_row["test"]["last"], rel=1e-5)
    with overfit.loaded(net, row.checkpoints.best):
        assert ftkit.row_losses(net, tokenizer, list(data["test"])) == pytest.approx(row.per_row["test"]["kept"],
                                                                                     rel=1e-5)
    assert ftkit.row_losses(net, tokenizer, list(data["test"])) == pytest.approx(end, rel=1e-6)  # swapped back
    assert overfit.validation_loss(row, profile) == pytest.approx(row.losses("eval_loss")[1][-1], rel=1e-4)


def test_weight_decay_is_a_loss_penalty_only_outside_adamw():
    """One real step of each torch optimizer: AdamW's decay (what the Trainer builds for adamw_torch) pulls every
    weight by lr x lambda x theta whatever its gradient, a loss penalty under Adam does not; for Adam's own
    weight_decay (L2 in the gradient) and for SGD the two are the same update."""
    import torch

    assert overfit.optimizer_class("adamw_torch") is torch.optim.AdamW
    adamw = overfit.decay_vs_penalty(torch.optim.AdamW)
    assert adamw["decay_pull"] == pytest.approx([1.0, 1.0]) and adamw["difference"] > 0.5
    assert adamw["penalty_pull"][1] == pytest.approx(1 / (0.1 * 0.5), rel=1e-3)  # Adam normalises: a step of lr
    assert overfit.penalty_verdict(adamw, "AdamW").outcome == ftkit.core.claims.DIFFERS
    for optimizer in (torch.optim.Adam, torch.optim.SGD):
        same = overfit.decay_vs_penalty(optimizer)
        assert same["difference"] < 1e-9 and overfit.penalty_verdict(same, optimizer.__name__).holds


def test_early_stop_replays_the_callback_rule():
    curve = [1.0, 0.8, 0.85, 0.7, 0.75, 0.76, 0.9]
    assert overfit.early_stop(curve, 1) == (2, 1)  # the blip at index 2 stops patience 1 before the minimum
    assert overfit.early_stop(curve, 3) == (6, 3)
    assert overfit.early_stop(curve, 4) == (None, 3)
    assert overfit.early_stop([1.0, 0.99, 0.98], 1, threshold=0.05) == (1, 0)
    with pytest.raises(ValueError, match="patience"):
        overfit.early_stop(curve, 0)


def test_find_leaks_flags_memorised_values_only():
    data = ftkit.load_course_dataset(n_train=2, n_validation=1, n_test=1, n_heldout=2, seed=0)
    trained = [ftkit.parse_answer(a) for a in data["train"]["answer"]]
    truth = [ftkit.parse_answer(a) for a in data["heldout"]["answer"]]
    leaked = dict(truth[0], job=trained[0]["job"]) if trained[0]["job"] != truth[0]["job"] else None
    misread = dict(truth[1], age=truth[1]["age"] + 1)
    answers = [ftkit.format_answer(leaked or truth[0]), ftkit.format_answer(misread)]
    leaks = overfit.find_leaks(answers, data["heldout"], data["train"])
    if leaked:
        assert leaks == [{"sentence": leaks[0]["sentence"], "field": "job", "said": trained[0]["job"],
                          "truth": truth[0]["job"]}]
    assert all(leak["field"] != "age" or leak["said"] in {t["age"] for t in trained} for leak in leaks)
    assert overfit.find_leaks([data["heldout"][0]["answer"], "no json"], data["heldout"], data["train"]) == []


def test_time_saved_says_when_the_seconds_went_the_other_way():
    assert "10 s against 20 s" in overfit.time_saved(12, 24, 10, 20)
    assert "checkpoint at every evaluation" in overfit.time_saved(9, 10, 63, 34)  # slower: said, not hidden
    for claim in {r.claim for r in overfit.REMEDIES.values() if r.claim} | {"3.weight-decay-penalty"}:
        assert str(ftkit.verdict(claim, False, "x")).startswith("differs here")  # every remedy's claim has a CLAIMS.md row


def fake_row(name, seed, curve, test, lr=1e-3):
    history = []
    for i, v in enumerate(curve, 1):
        history += [{"step": i, "train_loss": 0.01 * v, "learning_rate": lr}, {"step": i, "eval_loss": v}]
    remedy = overfit.REMEDIES[name]
    return overfit.Row(method="lora", model="tiny-random", hyperparameters={"seed": seed}, history=history,
                       wall_time_s=len(curve), restored_step=2 if remedy.patience else None, remedy=name,
                       strategy=remedy.strategy, changes=remedy.changes, claim=remedy.claim, planned_steps=4,
                       per_row={"test": {"kept": [test - 0.01, test + 0.01], "last": [test, test]},
                                "train": {"kept": [0.01], "last": [0.01]}},
                       noise_margins={"kept": [1.0, -1.0], "last": [2.0, 1.0]}, test={"exact_match": 0.5},
                       heldout={"exact_match": 0.25}, adapter={"A": 1.0, "B": 1.0, "delta_W": 1.0})


def test_scoreboard_ranks_by_the_kept_models_test_loss():
    rows = {"baseline": [fake_row("baseline", s, [0.5, 0.1, 0.2, 0.3], t) for s, t in enumerate((0.3, 0.32))],
            "early stopping": [fake_row("early stopping", s, [0.5, 0.1, 0.2], t) for s, t in enumerate((0.3, 0.32))],
            "lower LR": [fake_row("lower LR", s, [0.9, 0.6, 0.5, v], t)
                         for s, (v, t) in enumerate(((0.45, 0.36), (0.35, 0.4)))]}
    s = overfit.summary(rows)
    assert s["early stopping"]["kept_step"] == 2 and s["baseline"]["kept_val"] == 0.1
    assert s["lower LR"]["test_loss"] == pytest.approx(0.38) and s["lower LR"]["learned_noise"] == 2
    assert s["lower LR"]["vs_baseline"].diffs == pytest.approx((0.2, 0.25))  # seed by seed: 0.36/0.3, 0.4/0.32
    assert rows["baseline"][0].rise == pytest.approx(2.0) and rows["baseline"][0].best_step == 2
    assert overfit.ranking(rows)[-1] == "lower LR"
    assert "learns less" in overfit.why("lower LR", rows)
    rows["weight decay 10"] = [fake_row("weight decay 10", 0, [0.5, 0.1, 0.25, 0.2], 0.2)]  # 1e-3 x 10 x 4: 4 %
    assert overfit.inert(rows["weight decay 10"][0]) and "not the decay" in overfit.why("weight decay 10", rows)
    v = overfit.remedy_verdict("weight decay 10", rows)
    assert v.outcome == ftkit.core.claims.NOT_SETTLED and "inert" in v.detail
    rows["4x records"] = [fake_row("4x records", 0, [0.5, 0.05, 0.06, 0.06], 0.1)]
    assert "lower than the baseline ever did" in overfit.why("4x records", rows)
    assert "memorises less" in overfit.why("4x records", rows)
    for name in ("weight decay 10", "4x records"):
        del rows[name]
    assert "keeps the model of step 2" in overfit.why("early stopping", rows)
    table = overfit.scoreboard_table(rows)
    assert table.count("\n") == 4 and "+22.5% ± 5.0% (mean ± 2 SE over 2 seeds)" in table and "patience 3" in table
    assert "2.0 of 2" in table and "2 / 3" in table
    ax = ftkit.overfitting.plot_scoreboard(rows)
    assert len(ax.patches) == 3 and ax.get_xlabel().startswith("test loss")
    assert math.isclose(rows["baseline"][0].gap, 0.1 - 0.01 * 0.1)
    assert math.isclose(rows["baseline"][0].last_train, 0.01 * 0.3)  # the last step's, not the kept one's


def test_unknown_remedy_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        overfit.overfit_data(ftkit.get_profile("ci"), "dropout please")


def test_rows_are_kept_per_run_and_keyed_by_every_setting(profile, monkeypatch, tmp_path):
    """Rows live in the run's output folder (not the repository, not the user's cache) and a change of profile, seed
    or any setting of the row gives another file."""
    monkeypatch.delenv(rows.ROWS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert overfit.rows_dir().resolve() == tmp_path / "outputs" / "overfit"
    monkeypatch.setenv(rows.ROWS_ENV, str(tmp_path / "elsewhere"))
    assert overfit.rows_dir() == tmp_path / "elsewhere"
    paths = {rows.row_path("baseline", 0, profile), rows.row_path("baseline", 1, profile),
             rows.row_path("baseline", 0, ftkit.get_profile("cpu")), rows.row_path("lower LR", 0, profile)}
    assert len(paths) == 4
    monkeypatch.setitem(overfit.SETUPS, "ci", TINY)
    assert rows.row_path("baseline", 0, profile) not in paths  # the baseline's sizes changed


def test_each_profile_trains_its_remedies(monkeypatch):
    ci, cpu = ftkit.get_profile("ci"), ftkit.get_profile("cpu")
    assert overfit.profile_remedies(profile=cpu) == list(overfit.REMEDIES)
    chosen = overfit.profile_remedies(profile=ci)
    assert chosen[0] == "baseline" and set(chosen) < set(overfit.REMEDIES)
    assert overfit.profile_remedies(["lower LR", "baseline"], cpu) == ["lower LR", "baseline"]
    with pytest.raises(ValueError, match="choose one of"):
        overfit.profile_remedies(["dropout please"], ci)


def test_a_remedy_is_one_dict_of_changes_and_a_row_carries_it():
    """Hyperparameters, data and early stopping are declared in one dict per remedy; a misspelt name is refused
    there, and the analysis reads what a row changed from the row itself."""
    from ftkit.chapters.overfitting.remedies import Remedy, describe

    with pytest.raises(ValueError, match="not wieght_decay"):
        Remedy("2. regularization", {"wieght_decay": 0.1})
    four = overfit.REMEDIES["4x records"]
    assert (four.hp, four.data, four.patience) == ({}, {"n_train_factor": 4}, None)
    assert overfit.REMEDIES["early stopping"].patience == 3
    assert describe({"weight_decay": 0.1, "lora_dropout": 0.1}) == "weight_decay=0.1, lora_dropout=0.1"
    assert describe({"n_train_factor": 4}) == "4x the records" and describe({}) == "—"
    row = fake_row("weight decay 10", 0, [0.5, 0.1, 0.2, 0.3], 0.3)
    assert (row.setting, row.claim, row.seed) == ("weight_decay=10.0", "3.weight-decay", 0)
