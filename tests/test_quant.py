"""Blockwise int4 and NF4 from scratch (ftkit.chapters.methods.quant), checked bit for bit against bitsandbytes on the CPU."""

import math

import pytest
import torch

from ftkit.chapters.methods import quant
from ftkit.core.builtin import builtin_model_dir

bnbf = pytest.importorskip("bitsandbytes.functional")


@pytest.fixture(scope="module")
def down_proj():
    """A real weight matrix: layer 0's mlp.down_proj of SmolLM2-135M (576 x 1536), read straight from disk."""
    from safetensors import safe_open

    with safe_open(builtin_model_dir() / "model.safetensors", framework="pt") as f:
        return f.get_tensor("model.layers.0.mlp.down_proj.weight").float()


def test_nf4_levels_are_bitsandbytes_table():
    table = bnbf.get_4bit_type("nf4", device="cpu")
    levels = quant.nf4_levels()
    assert levels.shape == (16,) and levels[0] == -1 and levels[7] == 0 and levels[-1] == 1
    assert (levels - table).abs().max() < 1e-6
    assert torch.equal(levels, table)  # even bit-identical
    assert (quant.uniform_levels() - table).abs().max() > 0.1  # an even grid is not NF4


def test_our_nf4_is_bitsandbytes_nf4_on_a_real_matrix(down_proj):
    agreement = quant.compare_with_bnb(down_proj)
    assert agreement == {"codes_equal": 1.0, "absmax_max_diff": 0.0, "dequant_max_diff": 0.0}
    codes, absmax = quant.nf4_quantize(down_proj)
    theirs, packed, _ = quant.bnb_nf4_roundtrip(down_proj)
    assert torch.equal(quant.nf4_dequantize(codes, absmax), theirs)
    # Packing: the first value of each pair sits in the high nibble.
    assert packed.reshape(-1)[0] == (codes.reshape(-1)[0] << 4) | codes.reshape(-1)[1]


def test_the_comparison_catches_wrong_blocksize_levels_or_packing(down_proj):
    theirs, packed, _ = quant.bnb_nf4_roundtrip(down_proj, blocksize=64)
    codes, absmax = quant.nf4_quantize(down_proj, blocksize=128)
    assert (quant.nf4_dequantize(codes, absmax, blocksize=128) - theirs).abs().max() > 1e-2
    uniform = quant.uniform_levels()
    codes, absmax = quant.nf4_quantize(down_proj, levels=uniform)
    assert (quant.nf4_dequantize(codes, absmax, levels=uniform) - theirs).abs().max() > 1e-2
    assert quant.compare_with_bnb(down_proj, levels=uniform)["codes_equal"] < 0.9
    swapped = ((packed & 0x0F) << 4) | (packed >> 4)  # low nibble first: the wrong order
    assert (quant.unpack_4bit(swapped, down_proj.shape) == quant.nf4_quantize(down_proj)[0]).float().mean() < 0.5


def test_agreement_when_the_size_is_not_a_multiple_of_the_blocksize():
    torch.manual_seed(0)
    w = torch.randn(100, 76) * 0.02  # 7600 = 118 blocks of 64 + 48
    assert quant.compare_with_bnb(w) == {"codes_equal": 1.0, "absmax_max_diff": 0.0, "dequant_max_diff": 0.0}


def test_values_on_and_next_to_the_midpoints_match_bnb():
    """Random weights almost never land within a few ulps of a midpoint, so probe there on purpose: this pins
    down the tie rule (the lower level) and the scaling (w * (1/absmax), not w / absmax)."""
    midpoints = (quant.nf4_levels()[1:] + quant.nf4_levels()[:-1]) / 2
    up = down = midpoints * 3.0
    near = [up]
    for _ in range(6):  # the 6 floats just above and just below each scaled midpoint
        up, down = torch.nextafter(up, torch.tensor(9.0)), torch.nextafter(down, torch.tensor(-9.0))
        near += [up, down]
    near = torch.cat(near)[:189].view(3, 63)  # 3 blocks of 63 probes ...
    w = torch.cat([torch.full((3, 1), 3.0), near], dim=1)  # ... plus 3.0, so every block's absmax is 3.0
    assert quant.compare_with_bnb(w) == {"codes_equal": 1.0, "absmax_max_diff": 0.0, "dequant_max_diff": 0.0}


def test_nf4_beats_int4_on_real_and_normal_weights(down_proj):
    torch.manual_seed(0)
    for w in (down_proj, torch.randn(512, 512) * 0.02):
        nf4 = quant.reconstruction_error(w, quant.nf4_dequantize(*quant.nf4_quantize(w)))
        int4 = quant.reconstruction_error(w, quant.absmax_dequantize(*quant.absmax_quantize(w)))
        assert nf4["rel_frobenius"] < 0.9 * int4["rel_frobenius"]
        assert nf4["mean_abs"] < int4["mean_abs"]


def test_bits_per_parameter():
    assert quant.double_quant_bits(double_quant=False) == 4.5
    assert quant.double_quant_bits() == pytest.approx(4.127, abs=1e-3)
    assert quant.double_quant_bits() - 4 == pytest.approx(0.127, abs=1e-3)  # QLoRA paper's overhead


def test_double_quant_bits_is_what_bitsandbytes_stores():
    # an independent route to 4.127: the bytes bitsandbytes really keeps for a large weight (packed codes, 8-bit
    # absmax per block of 64, one fp32 constant per 256 absmax values), per weight
    import bitsandbytes.functional as F

    w = torch.randn(1024, 4096, dtype=torch.bfloat16)
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    stored = [packed, state.absmax, state.state2.absmax]
    bits = 8 * sum(t.numel() * t.element_size() for t in stored) / w.numel()
    assert bits == pytest.approx(quant.double_quant_bits(), rel=1e-4)


@pytest.mark.parametrize("shape", [(3, 5), (64,), (8, 128)])
def test_round_trip_shapes_and_dtypes(shape):
    torch.manual_seed(0)
    w = torch.randn(shape).bfloat16()
    n_blocks = math.ceil(math.prod(shape) / 64)

    codes, absmax = quant.absmax_quantize(w)
    assert codes.shape == w.shape and codes.dtype == torch.int8 and absmax.shape == (n_blocks,)
    assert codes.abs().max() == 7 and codes.min() >= -7
    w_hat = quant.absmax_dequantize(codes, absmax)
    assert w_hat.shape == w.shape and w_hat.dtype == torch.float32

    codes, absmax = quant.nf4_quantize(w)
    assert codes.shape == w.shape and codes.dtype == torch.uint8 and codes.max() <= 15
    w_hat = quant.nf4_dequantize(codes, absmax)
    assert w_hat.shape == w.shape and w_hat.dtype == torch.float32
    # The largest |w| of each block is a level (+-1 times absmax), so it comes back exactly.
    assert (w_hat - w.float()).abs().flatten().min() == 0
    assert quant.reconstruction_error(w, w_hat)["rel_frobenius"] < 0.15


def test_values_on_the_grid_come_back_exactly():
    levels = quant.nf4_levels()
    w = levels.repeat(4) * 0.3  # 64 values = one block whose absmax is 0.3
    codes, absmax = quant.nf4_quantize(w)
    assert torch.equal(codes, torch.arange(16, dtype=torch.uint8).repeat(4))
    torch.testing.assert_close(quant.nf4_dequantize(codes, absmax), w, atol=1e-7, rtol=0)
    w = torch.arange(-7, 8).float() / 7 * 0.5
    torch.testing.assert_close(quant.absmax_dequantize(*quant.absmax_quantize(w)), w, atol=1e-7, rtol=0)


def test_zero_block_and_bad_blocksize():
    codes, absmax = quant.nf4_quantize(torch.zeros(64))
    assert torch.equal(quant.nf4_dequantize(codes, absmax), torch.zeros(64))
    with pytest.raises(ValueError, match="blocksize"):
        quant.nf4_quantize(torch.ones(8), blocksize=0)
