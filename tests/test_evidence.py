"""The one noise rule (ftkit.core.evidence) and the interleaved speed probe (ftkit.core.speed)."""

import math

import pytest
import torch

import ftkit
from ftkit.core import evidence
from ftkit.core.speed import interleaved_speed


def test_the_noise_rule_goes_three_ways():
    clear = evidence.paired([1.0, 1.1, 0.9], [0.5, 0.6, 0.4])  # +0.5 on every seed
    assert clear.above(0.0) is True and clear.below(0.0) is False and clear.above(0.6) is False
    noisy = evidence.paired([1.0, 0.2, 1.5], [0.5, 0.6, 0.4])  # +0.5, -0.4, +1.1: the sign is not settled
    assert noisy.above(0.0) is None and noisy.below(0.0) is None
    assert math.isclose(noisy.mean, 0.4) and math.isclose(noisy.se, statistics_se([0.5, -0.4, 1.1]))
    # fewer pairs than MIN_PAIRS measure no noise: never settled, however large the difference
    assert evidence.paired([9.0, 9.0], [0.0, 0.0]).above(0.0) is None
    assert evidence.paired([9.0], [0.0]).above(0.0) is None
    # identical differences: no spread, settled by the sign alone
    assert evidence.paired([2.0] * 3, [1.0] * 3).above(0.0) is True


def statistics_se(d):
    m = sum(d) / len(d)
    return math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1)) / math.sqrt(len(d))


def test_pairs_by_seed_and_refuses_what_does_not_pair():
    p = evidence.paired({0: 1.0, 1: 2.0, 2: 3.0, 7: 9.0}, {0: 0.5, 1: 1.0, 2: 2.5})  # seed 7 ran in one arm only
    assert p.diffs == (0.5, 1.0, 0.5)
    with pytest.raises(ValueError, match="one value each per seed"):
        evidence.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same seeds"):
        evidence.paired({0: 1.0}, {1: 1.0})
    assert evidence.paired([1.0, 2.0, math.nan], [0.0, 0.0, 0.0]).above(0.0) is None  # a NaN arm decides nothing


def test_describe_says_how_many_seeds_and_when_noise_was_not_measured():
    assert evidence.paired([1.0], [0.5]).describe() == "+0.500 (one seed only: noise not measured)"
    assert evidence.paired([1.0], [0.5]).undecided() == "1 seed cannot measure the noise (3 needed)"
    assert evidence.paired([1.0, 0.0, 2.0], [0.5] * 3).undecided("rounds") == "within the noise of these 3 rounds"
    said = evidence.paired([1.0, 1.1, 0.9], [0.5, 0.6, 0.4]).describe()
    assert said == "+0.500 ± 0.000 (mean ± 2 SE over 3 seeds)"


def test_log_ratios_compare_rates_as_ratios():
    p = evidence.log_ratios([240, 250, 230], [200, 200, 200])
    assert math.isclose(math.exp(p.mean), (1.2 * 1.25 * 1.15) ** (1 / 3))
    assert p.above(math.log(1.1)) is True and p.above(math.log(1.3)) is False


def test_log_ratios_pair_dicts_by_seed():
    p = evidence.log_ratios({0: 240, 1: 250, 2: 230}, {2: 200, 0: 100, 7: 50})  # seeds 0 and 2 ran in both
    assert sorted(round(math.exp(x), 6) for x in p.diffs) == [1.15, 2.4]


def test_interleaved_speed_times_every_model_every_round(profile):
    models = {name: ftkit.load_model("tiny-random", method, precision="fp32", device="cpu")[0]
              for name, method in (("full", "full"), ("lora", "lora"))}
    before = {n: p.detach().clone() for n, p in models["full"].named_parameters()}
    tokens = torch.randint(0, 100, (2, 16))
    s = interleaved_speed(models, {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}, precision="fp32",
                          rounds=3, steps_per_round=2, warmup_steps=1, progress=False)
    assert set(s.rates) == {"full", "lora"} and all(len(r) == 3 and min(r) > 0 for r in s.rates.values())
    assert s.tokens_per_step == 32 and len(s.ratios("lora", "full")) == 3
    assert "median of 3 interleaved rounds of 2 training step(s)" in s.how()
    changed = [n for n, p in models["full"].named_parameters() if not torch.equal(p, before[n])]
    assert changed  # real training steps: the optimizer moved the weights
    with pytest.raises(ValueError, match="rounds and steps_per_round must be >= 1"):
        interleaved_speed(models, {"input_ids": tokens}, precision="fp32", rounds=0)
