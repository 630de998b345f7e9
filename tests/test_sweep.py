"""The sweep (same numbers as separate runs), its CLI, bad inputs, and every chapter-2 verdict flipped by made-up numbers."""

import json
import math

import pytest
import torch

import ftkit
import ftkit.core.profiles
from ftkit.__main__ import main, parse_value

from ftkit.chapters import hyperparameters as sw
from ftkit.core.claims import NOT_SETTLED


def tiny_sweep(profile, data, name="learning_rate", values=(1e-3, 1e-2), **fixed):
    fixed.setdefault("max_steps", 3)
    fixed.setdefault("batch_size", 4)
    return ftkit.hyperparameters.sweep(name, list(values), "lora", profile=profile, data=data, progress=False, **fixed)


@pytest.fixture(scope="module")
def tiny_profile(profile):
    return ftkit.get_profile("ci", model="tiny-random")


@pytest.fixture(scope="module")
def lr_sweep(tiny_profile, tiny_data):
    return tiny_sweep(tiny_profile, tiny_data)


def test_sweep_equals_separate_runs(lr_sweep, tiny_profile, tiny_data):
    """The sweep's cheap path (one dataset, validation only at the end, no save, no model kept) changes no number."""
    for rate, result in zip(lr_sweep.values, lr_sweep.results, strict=True):
        alone = ftkit.run_experiment("lora", profile=tiny_profile, data=tiny_data, learning_rate=rate, max_steps=3,
                                     batch_size=4, eval_every=1, progress=False)
        assert result.losses("train_loss")[1] == alone.losses("train_loss")[1]
        assert result.losses("grad_norm")[1] == alone.losses("grad_norm")[1]
        assert result.final("eval_loss") == pytest.approx(alone.final("eval_loss"), abs=1e-6)
        assert result.losses("eval_loss")[0] == [3] and result.trained_model is None and result.saved_bytes == 0


def test_sweep_result_tabulates_plots_and_saves(lr_sweep, tmp_path):
    assert lr_sweep.values == [1e-3, 1e-2] and len(lr_sweep.results) == 2
    assert lr_sweep.fixed["max_steps"] == 3 and "learning_rate" not in lr_sweep.fixed
    table = lr_sweep.table()
    assert table.count("\n") == 3 and "validation loss" in table
    assert lr_sweep.best() in lr_sweep.values
    ax = lr_sweep.plot()
    assert ax.get_xscale() == "log" and len(ax.lines) >= 1
    assert len(lr_sweep.plot_curves().lines) == 2
    path = lr_sweep.save_json(tmp_path / "s.json")
    again = ftkit.hyperparameters.SweepResult.load_json(path)
    assert again.final() == lr_sweep.final() and again.name == "learning_rate"


@pytest.mark.parametrize("name, values, fixed, message", [
    ("learnin_rate", [1e-3], {}, "Unknown hyperparameter 'learnin_rate'"),
    ("learning_rate", [], {}, "No values to sweep learning_rate"),
    ("learning_rate", [1e-3, -1.0], {}, "learning_rate=-1.0 is refused"),
    ("lora_r", [8, 0], {}, "lora_r=0 is refused"),
    ("warmup_steps", [0, 50], {"max_steps": 12}, "warmup_steps=50 is refused"),
    ("num_epochs", [1], {"max_steps": 5}, "num_epochs=1 is refused"),
    ("learning_rate", [1e-3], {"learning_rate": 1e-4}, "learning_rate is the swept hyperparameter"),
])
def test_bad_inputs_are_refused_before_training(profile, name, values, fixed, message):
    with pytest.raises(ValueError, match=message):
        sw.sweep_hyperparameters(name, values, "lora", profile=profile, **fixed)


def test_num_epochs_sweep_counts_steps(tiny_profile, tiny_data):
    s = sw.sweep("num_epochs", [1, 2], "lora", profile=tiny_profile, data=tiny_data, batch_size=8, progress=False)
    assert [r.losses()[0][-1] for r in s.results] == [4, 8]  # 32 rows / 8 = 4 steps per epoch


def test_cli_writes_png_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ftkit.core.profiles, "PROFILES", {**ftkit.PROFILES, "ci": ftkit.get_profile(
        "ci", model="tiny-random", n_train=16, n_eval=4)})
    code = main(["sweep", "lora_r", "2", "4", "--steps", "2", "--profile", "ci", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "lora_r_lora.json").read_text())
    assert data["values"] == [2, 4] and len(data["results"]) == 2
    assert (tmp_path / "lora_r_lora.png").stat().st_size > 1000
    assert "best lora_r" in capsys.readouterr().out
    assert main(["sweep", "nonsense", "1", "--profile", "ci", "--out", str(tmp_path)]) == 2
    assert "Unknown hyperparameter" in capsys.readouterr().err


def test_parse_value():
    assert parse_value("16") == 16 and parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value("all-linear") == "all-linear"


def test_explore_without_widgets_runs_once(tiny_profile, tiny_data):
    result = sw.explore(profile=tiny_profile, data=tiny_data, widgets=False)
    assert isinstance(result, ftkit.Result) and len(result.losses()[1]) == 4 and not sw.has_widget_frontend()


# --- verdicts, each flipped by made-up numbers -------------------------------------------------------------------

def agrees(verdict):
    return verdict.holds


def lr_inputs(high_diverges=True, lora_best=1e-3):
    rates = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    finals, curves = {}, {}
    for m, best in (("lora", lora_best), ("full", 1e-5)):
        finals[m] = {r: (0.5 if r == 1e-6 else 0.1 if r == best else 0.3) for r in rates}
        finals[m][1e-2] = math.nan if high_diverges else 0.2
        curves[m] = {r: [1.0, 0.9, 0.8, 0.7] for r in rates}
    return {"lora": 0.52, "full": 0.52}, finals, curves


def test_diagnose_rates():
    d = ftkit.hyperparameters.diagnose_rates(1.0, {1: 1.02, 2: 0.5, 3: 0.1, 4: 1.2, 5: 0.3, 6: 0.9},
                             {k: [1.0, 0.8, 0.6] for k in range(1, 7)} | {5: [1.0, 1.6, 1.1, 1.8, 2.0],
                                                                          6: [1.0, 1.1, 1.0, 1.2, 1.3]})
    # 1: within 5 % of the start (noise), barely moved; 5: oscillates; 6: rises often but swings only 30 %: noise
    assert d == {1: "too low", 2: "ok", 3: "best", 4: "too high", 5: "too high", 6: "too low"}
    assert ftkit.hyperparameters.rise_share([1, 2, 1, 2, 3]) == 0.75


def test_lr_verdicts_flip():
    v = sw.lr_verdicts(*lr_inputs())
    assert agrees(v["2.lr-too-high"]) and agrees(v["2.lr-too-low"])
    assert set(v) == {"2.lr-too-high", "2.lr-too-low"}  # local minima: minima_verdict's; the ratio: lr_ratio_verdict's
    v = sw.lr_verdicts(*lr_inputs(high_diverges=False, lora_best=1e-5))
    assert not agrees(v["2.lr-too-high"])
    start, finals, curves = lr_inputs()
    for m in finals:
        finals[m][1e-6] = 0.12
    assert not agrees(sw.lr_verdicts(start, finals, curves)["2.lr-too-low"])


def test_a_too_low_run_continues_at_the_best_rate(tiny_profile, tiny_data):
    continued = sw.continue_too_low("lora", 1e-6, 1e-2, profile=tiny_profile, data=tiny_data, steps=2, batch_size=2,
                                    seeds=(0, 1), progress=False)
    assert set(continued) == {0, 1}
    for c in continued.values():
        assert c["continued"] != c["low"] and c["grad_start"] > 0  # the continuation trained the stopped model
    v = sw.minima_verdict("lora", 1e-6, 1e-2, continued)
    assert v.outcome == "not settled at this size" and "over 2" in v.detail  # two seeds: no noise rule yet
    stopped = ftkit.run_experiment("lora", profile=tiny_profile, data=tiny_data, max_steps=1, save=False,
                                   score_splits=(), progress=False, keep_model=False)
    with pytest.raises(ValueError, match="kept its model"):
        ftkit.run_experiment("lora", profile=tiny_profile, data=tiny_data, max_steps=1, start=stopped)


def test_batch_verdicts_flip():
    acc = {"loss_diff": 0.001, "weight_diff": 0.005, "tolerance": 0.02, "memory_small": 1e6, "memory_big": 2e6}

    def sizes(small, big):
        return {1: {"samples": small, "variance": sum(small) / 3, "batches": 3},
                8: {"samples": big, "variance": sum(big) / 3, "batches": 3}}

    v = sw.batch_verdicts(sizes([4.0, 4.4, 3.6], [0.5, 0.6, 0.4]), {1: 1e6, 4: 2e6, 8: 3e6}, acc)
    assert all(agrees(t) for t in v.values()) and "b^-1.00" in v["2.batch-stable"].detail
    v = sw.batch_verdicts(sizes([4.0, 4.4, 3.6], [3.0, 3.1, 2.9]), {1: 1e6, 4: 2e6, 8: 1.5e6},
                          {**acc, "weight_diff": 0.1})
    assert not any(agrees(t) for t in v.values())


def test_rank_verdicts_flip():
    fits = {s: {4: 0.3 + d, 16: 0.1 + d} for s, d in enumerate((0, .01, -.01))}  # r=16 settles 0.2 lower
    good = sw.rank_verdicts({4: 10, 16: 40}, {4: 10, 16: 40}, {4: 100, 16: 110}, fits)
    assert all(agrees(t) for t in good.values()) and "training-loss floor at a fixed alpha" in good["2.rank-capacity"].detail
    bad = sw.rank_verdicts({4: 10, 16: 40}, {4: 10, 16: 41}, {4: 100, 16: 100},
                           {s: {4: f[16], 16: f[4]} for s, f in fits.items()})
    assert not any(agrees(t) for t in bad.values())


def placed(all_linear: tuple, mlp: tuple, attention=(0.30, 0.31, 0.29)) -> dict:
    """placement_runs' output on three seeds, each placement at about 2.4 M trainable parameters."""
    return {name: {"rank": r, "rate": 1e-3, "params": 2_442_240, "losses": dict(enumerate(losses))}
            for name, r, losses in (("all-linear", 16, all_linear), ("attention", 42, attention), ("MLP", 26, mlp))}


def test_matched_placements_train_about_the_same_parameters():
    placements = sw.matched_placements("smollm2-135m", 16)
    assert placements["all-linear"] == ("all-linear", 16)
    assert placements["attention"][1] == 42 and placements["MLP"][1] == 26  # 10176 r vs 3840 r and 6336 r per layer
    shape = ftkit.model_shape("smollm2-135m")
    total = ftkit.lora_params(shape, 16)
    for targets, r in placements.values():
        assert ftkit.lora_params(shape, r, targets) == pytest.approx(total, rel=0.02)


def test_placement_verdict_three_ways():
    v = sw.placement_verdict(placed((0.20, 0.21, 0.19), (0.22, 0.23, 0.21)))
    assert agrees(v) and "attention r=42" in v.detail and "MLP" in v.detail
    assert sw.placement_verdict(placed((0.40, 0.41, 0.39), (0.22, 0.23, 0.21))).outcome not in (NOT_SETTLED,) \
        and not agrees(sw.placement_verdict(placed((0.40, 0.41, 0.39), (0.22, 0.23, 0.21))))
    assert sw.placement_verdict(placed((0.20, 0.21, 0.19), (0.20, 0.40, 0.30))).outcome == NOT_SETTLED
    at_top = placed((0.20, 0.21, 0.19), (0.22, 0.23, 0.21))
    at_top["MLP"]["grid"] = {3e-4: 0.3, 1e-3: 0.22}  # its best rate, 1e-3, is the highest it tried
    assert "MLP: the best rate is at an end of the rates tried" in sw.placement_verdict(at_top).detail


def test_alpha_verdicts_flip():
    put = {4: {0: 1e-2, 1: 1.2e-2, 2: 0.9e-2}, 64: {0: 1e-2, 1: 0.8e-2, 2: 1.1e-2}}  # alpha = 2r: the best rate stays
    made_up = {"alpha, lr": {0: 0.3, 1: 0.3, 2: 0.3}, "alpha/2, lr": {0: 0.4, 1: 0.41, 2: 0.39},
               "alpha/2, 2lr": {0: 0.3, 1: 0.31, 2: 0.3}}
    v = sw.alpha_verdicts(put, made_up)
    assert agrees(v["2.alpha-influence"]) and agrees(v["2.alpha-rule"]) and "learning rate" in v["2.alpha-influence"].detail
    assert "stays put is alpha = 2r" in v["2.alpha-rule"].detail and "fixed alpha would have moved it +1.17" in \
        v["2.alpha-rule"].detail
    not_made_up = {**made_up, "alpha/2, 2lr": {0: 0.5, 1: 0.52, 2: 0.51}}
    falls = {**put, 64: {s: x / 16 for s, x in put[4].items()}}  # 16x lower at 16x the rank: fixed alpha keeps it
    v = sw.alpha_verdicts(falls, not_made_up)
    assert not agrees(v["2.alpha-influence"]) and not agrees(v["2.alpha-rule"]) and "Adam" in v["2.alpha-rule"].detail
    assert v["2.alpha-rule"].outcome != NOT_SETTLED and "stays put is fixed alpha" in v["2.alpha-rule"].detail
    assert sw.alpha_verdicts({4: put[4]}, made_up)["2.alpha-rule"].outcome == NOT_SETTLED  # one rank
    assert sw.alpha_verdicts({**put, 64: {0: math.nan, 1: 1e-2, 2: 1e-2}}, made_up)["2.alpha-rule"].outcome == NOT_SETTLED


def test_capacity_and_alpha_runs_on_the_tiny_model(tiny_profile, tiny_data):
    small = {**tiny_data, "train": tiny_data["train"].select(range(4))}
    fits = sw.capacity_runs((2, 8), alpha=8, learning_rate=1e-2, epochs=2, profile=tiny_profile, data=small,
                            seeds=(0, 1), progress=False)
    assert set(fits) == {0, 1} and all(set(f) == {2, 8} and all(v > 0 for v in f.values()) for f in fits.values())
    arms = sw.alpha_tradeoff(4, 8, 1e-3, profile=tiny_profile, data=tiny_data, steps=1, batch_size=2, seeds=(0,),
                             progress=False)
    assert set(arms) == {"alpha, lr", "alpha/2, lr", "alpha/2, 2lr"} and arms["alpha, lr"][0] != arms["alpha/2, lr"][0]


def test_epoch_and_warmup_verdicts_flip():
    def seeds(*curve):  # the same curve on 3 seeds, shifted by -0.01, 0, +0.01 (runs differ by seed, alike by count)
        return {s: {k: v + d for k, v in zip((1, 2, 4, 8), curve, strict=True)} for s, d in ((0, -.01), (1, 0), (2, .01))}

    v = sw.epoch_verdicts(seeds(0.5, 0.3, 0.4, 0.5), n_train=32)
    assert agrees(v["2.epochs-fit"]) and v["2.epochs-typical"].outcome == "not settled at this size"
    assert "a set of 32 cannot test it" in v["2.epochs-typical"].detail
    assert agrees(sw.epoch_verdicts(seeds(0.5, 0.3, 0.4, 0.5), n_train=5000)["2.epochs-typical"])
    v = sw.epoch_verdicts(seeds(0.5, 0.4, 0.3, 0.2), n_train=5000)  # still falling at 8: no overfitting side
    assert not agrees(v["2.epochs-fit"]) and "no overfitting side" in v["2.epochs-fit"].detail
    assert v["2.epochs-typical"].outcome == "differs here"  # best at 8, and 2 ends credibly higher
    noisy = seeds(0.5, 0.3, 0.4, 0.5)
    noisy[0][8], noisy[2][8] = 0.2, 0.6  # the largest count: 0.2, 0.5, 0.6 on the three seeds
    assert sw.epoch_verdicts(noisy, n_train=32)["2.epochs-fit"].outcome == "not settled at this size"
    rates, calm = (1e-2, 3e-2, 1e-1), [1.0, 0.8, 0.6]

    def arm(*ends):  # one seed's final losses at the three peak rates (start 1.0: above it is "too high")
        return dict(zip(rates, ends, strict=True)), {r: calm for r in rates}

    runs = {"none": {s: arm(0.5, 2.0, math.nan) for s in (0, 1, 2)}, "warmup": {s: arm(0.5, 0.4, 3.0) for s in (0, 1, 2)}}
    finals = {a: {s: f for s, (f, _) in by.items()} for a, by in runs.items()}
    curves = {a: {s: c for s, (_, c) in by.items()} for a, by in runs.items()}
    said = sw.warmup_verdicts(1.0, finals, curves)["2.warmup"]
    assert agrees(said) and "without warmup 0.01, 0.01, 0.01; with warmup 0.03, 0.03, 0.03" in said.detail
    assert sw.highest_stable(1.0, finals["none"][0], curves["none"][0]) == 0
    finals["warmup"] = finals["none"]  # no wider range on any seed: differs
    assert sw.warmup_verdicts(1.0, finals, curves)["2.warmup"].outcome == "differs here"


def test_gradient_noise_shrinks_with_batch_size(tiny_profile, tiny_data):
    model, tokenizer = ftkit.load_model("tiny-random", "lora")
    rows = list(tiny_data["train"])
    losses = ftkit.hyperparameters.warm_up(model, [ftkit.hyperparameters.answer_batch(tokenizer, rows[:4])] * 2)
    assert len(losses) == 2 and losses[1] < losses[0]  # real steps on the same batch: its loss falls
    batches = {b: [ftkit.hyperparameters.answer_batch(tokenizer, rows[4 + i * b:4 + (i + 1) * b]) for i in range(3)]
               for b in (1, 8)}
    before = ftkit.hyperparameters.flat_trainable(model).clone()
    noise = ftkit.hyperparameters.gradient_noise(model, batches)
    assert noise[8]["variance"] < noise[1]["variance"] and noise[1]["batches"] == 3 and len(noise[1]["samples"]) == 3
    assert -1 <= noise[1]["cosine"] <= 1 and (ftkit.hyperparameters.flat_trainable(model) == before).all()


class MeanOfPoints(torch.nn.Module):
    """loss = mean ‖w − xᵢ‖²/2 over the batch: each example's gradient is w − xᵢ, so with xᵢ ~ N(μ, σ²I) in P
    dimensions the batch gradient's variance is Pσ²/b and the signal ‖w − μ‖²: the estimator's answer is known."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return type("Out", (), {"loss": ((self.w - x) ** 2).sum(1).mean() / 2})()


def test_gradient_noise_is_unbiased_where_the_old_ratio_levels_off():
    torch.manual_seed(0)
    P, sigma, k = 1000, 1.0, 4
    model = MeanOfPoints(torch.full((P,), 0.05))  # signal ‖w − 0‖² = 2.5, noise per example P·σ² = 1000
    batches = {b: [{"x": sigma * torch.randn(b, P)} for _ in range(k)] for b in (1, 4, 16)}
    noise = ftkit.hyperparameters.gradient_noise(model, batches)
    for b in (1, 4, 16):
        assert noise[b]["variance"] == pytest.approx(P * sigma**2 / b, rel=0.35), b
    assert noise[1]["noise_scale"] == pytest.approx(1000 / 2.5, rel=0.6)  # tr(Σ)/|G|² = 400 examples
    # the old ratio ‖gᵢ − ḡ‖²/‖ḡ‖² (mean over i) hardly moves with b: noise dominates its denominator too
    old = {}
    for b, group in batches.items():
        g = torch.stack([0.05 - x.mean(0) for x in (batch["x"] for batch in group)])
        old[b] = float(((g - g.mean(0)) ** 2).sum(1).mean() / (g.mean(0) ** 2).sum())
    assert max(old.values()) / min(old.values()) < 2 and all(0.5 < v < k for v in old.values())
    assert noise[1]["variance"] / noise[16]["variance"] > 8  # the unbiased estimate falls ~16x


def test_accumulation_matches_the_big_batch_in_fp32(tiny_profile, tiny_data):
    """Batch 8 against 4 x 2 accumulation, in fp32: the same update up to float order; a per-micro-batch mean that
    halved or doubled the update would be off by 50 % or more."""
    acc = ftkit.hyperparameters.accumulation_check(tiny_profile, data=tiny_data, steps=2)
    assert acc["loss_diff"] < 1e-4 and acc["weight_diff"] < 1e-3, acc
    assert acc["big"].hyperparameters["gradient_accumulation_steps"] == 1
    assert acc["accumulated"].hyperparameters["gradient_accumulation_steps"] == 2


def test_u_minimum_reads_the_vertex_between_grid_points():
    rates = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    parabola = [math.exp((math.log10(r) + 3.3) ** 2) for r in rates]  # log(loss) a parabola with its vertex at 10^-3.3
    assert sw.u_minimum(rates, parabola) == pytest.approx(10 ** -3.3, rel=1e-9)
    assert sw.u_minimum(rates[::-1], parabola[::-1]) == pytest.approx(10 ** -3.3, rel=1e-9)  # any order
    assert math.isnan(sw.u_minimum(rates, [0.1, 0.2, 0.3, 0.4, 0.5]))  # lowest at the grid's end: not bracketed
    assert math.isnan(sw.u_minimum(rates, [0.5, 0.3, 0.1, math.nan, 0.5]))  # a neighbour diverged
    assert math.isnan(sw.u_minimum([1e-4, 1e-3, 1e-2], [0.1, 0.1, 0.1]))  # a flat bottom: no vertex


def test_lr_ratio_verdict_three_ways():
    optima = {"lora": {0: 1e-3, 1: 2e-3, 2: 1.5e-3}, "full": {0: 1e-4, 1: 1.2e-4, 2: 0.9e-4}}
    v = sw.lr_ratio_verdict(optima, "r = 16, alpha = 32 (alpha/r = 2)")
    assert agrees(v) and "alpha/r = 2" in v.detail and "decades" in v.detail
    assert not agrees(sw.lr_ratio_verdict({"lora": optima["full"], "full": optima["lora"]}, "")) \
        and sw.lr_ratio_verdict({"lora": optima["full"], "full": optima["lora"]}, "").outcome != NOT_SETTLED
    noisy = {"lora": {0: 1e-3, 1: 1e-5, 2: 1e-4}, "full": optima["full"]}
    assert sw.lr_ratio_verdict(noisy, "").outcome == NOT_SETTLED
    one = sw.lr_ratio_verdict({m: {0: o[0]} for m, o in optima.items()}, "")
    assert one.outcome == NOT_SETTLED and "10x" in one.detail  # one seed: the ratio shown, not decided
    edge = sw.lr_ratio_verdict({"lora": {0: math.nan, 1: 1e-3, 2: 1e-3}, "full": optima["full"]}, "")
    assert edge.outcome == NOT_SETTLED and "lora on seed 0" in edge.detail
