"""LoRA from scratch (ftkit.chapters.methods.lora): the step-0 identity, the parameter formula, merging, and agreement with peft."""

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

import ftkit
from ftkit.core.configs import LINEAR_NAMES
from ftkit.chapters.methods.lora import LoRALinear, add_lora, copy_to_peft, lora_param_count, time_forward
from ftkit.core.models import lora_config


def randomize_B(module: nn.Module, seed: int = 0) -> None:
    """Give every LoRALinear a nonzero B, as after some training (B = 0 would hide any mistake in A or scaling)."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.B, std=0.02)


def test_zero_B_leaves_the_layer_unchanged_exactly():
    torch.manual_seed(0)
    base = nn.Linear(32, 16)
    x = torch.randn(4, 32)
    assert torch.equal(LoRALinear(base, r=4, alpha=8)(x), base(x))


def test_zero_B_leaves_the_model_unchanged_exactly():
    model, tok = ftkit.load_model("tiny-random", "full")
    ids = tok("Alice moved to Paris in 2019.", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(ids).logits
        after = add_lora(model, r=4, alpha=8)(ids).logits
    assert torch.equal(before, after)


def test_parameter_count_matches_the_formula_and_peft():
    layer = LoRALinear(nn.Linear(576, 1536), r=8, alpha=16)
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    from peft import LoraConfig, get_peft_model  # an independent implementation counts the same

    theirs = get_peft_model(nn.Sequential(nn.Linear(576, 1536)), LoraConfig(r=8, target_modules=["0"]))
    assert trainable == lora_param_count(576, 1536, 8) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


def test_merged_linear_equals_the_unmerged_layer():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 48), r=4, alpha=8)
    randomize_B(layer)
    merged = layer.merge()
    x = torch.randn(5, 64)
    assert type(merged) is nn.Linear
    assert (layer(x) - layer.base(x)).abs().max() > 1e-2  # the update is really there
    torch.testing.assert_close(merged(x), layer(x), atol=1e-5, rtol=0)
    assert time_forward(merged, x, repeats=3) > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0, alpha=8), "positive integer"),
    (dict(r=-4, alpha=8), "positive integer"),
    (dict(r=2.5, alpha=8), "positive integer"),
    (dict(r=4, alpha=0), "alpha must be positive"),
    (dict(r=4, alpha=8, dropout=1.0), "dropout"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRALinear(nn.Linear(8, 8), **kwargs)


def test_add_lora_trains_only_A_and_B_and_the_loss_goes_down():
    model, tok = ftkit.load_model("tiny-random", "full")
    add_lora(model, r=4, alpha=8)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith((".A", ".B")) for name in trainable)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * len(LINEAR_NAMES)  # 2 layers, 7 linears each
    expected = sum(lora_param_count(m.base.in_features, m.base.out_features, 4) for m in wrapped)
    assert ftkit.count_parameters(model)[0] == expected

    frozen = model.model.layers[0].self_attn.q_proj.base.weight.clone()
    batch = tok(["Alice moved to Paris in 2019.", "Bob, 42, is a nurse in Lyon."], return_tensors="pt",
                padding=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch, labels=batch.input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(model.model.layers[0].self_attn.q_proj.base.weight, frozen)


def test_add_lora_without_matching_layers():
    with pytest.raises(ValueError, match="No nn.Linear"):
        add_lora(nn.Sequential(nn.Linear(4, 4)), r=2, alpha=4, target_modules=("q_proj",))


@pytest.fixture(scope="module")
def ours_and_peft():
    """The real SmolLM2-135M twice: with our LoRA and with peft's, holding the same nonzero A and B."""
    from peft import get_peft_model

    model, tok = ftkit.load_model("smollm2-135m", "full")
    ours = add_lora(copy.deepcopy(model), r=8, alpha=16)
    randomize_B(ours)
    hp = replace(ftkit.default_hyperparameters("lora"), lora_r=8, lora_alpha=16, target_modules=LINEAR_NAMES)
    theirs = get_peft_model(model, lora_config(hp))
    assert copy_to_peft(ours, theirs) == 30 * len(LINEAR_NAMES)
    return ours.eval(), theirs.eval(), tok


@pytest.mark.slow
@pytest.mark.parametrize("name", ["self_attn.q_proj", "mlp.down_proj"])
def test_same_as_peft_on_real_layers(ours_and_peft, name):
    ours, theirs, _ = ours_and_peft
    our_layer = ours.model.layers[0].get_submodule(name)
    peft_layer = theirs.base_model.model.model.layers[0].get_submodule(name)
    torch.manual_seed(0)
    x = torch.randn(2, 7, our_layer.base.in_features)
    with torch.no_grad():
        assert (our_layer(x) - our_layer.base(x)).abs().max() > 1e-2  # A and B really change the output
        assert (our_layer(x) - peft_layer(x)).abs().max() < 1e-5
        # Not vacuous: scaling by alpha instead of alpha / r would be caught.
        wrong = copy.deepcopy(our_layer)
        wrong.scaling = wrong.alpha
        assert (wrong(x) - peft_layer(x)).abs().max() > 1e-2


@pytest.mark.slow
def test_same_as_peft_on_the_whole_real_model(ours_and_peft):
    ours, theirs, tok = ours_and_peft
    ids = tok("Alice moved to Paris in 2019.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (ours(ids).logits - theirs(ids).logits).abs().max() < 1e-5
