"""Blockwise 4-bit quantization from scratch: absmax int4 and QLoRA's NF4, checked against bitsandbytes.

Used in notebooks/01_methods/02_quantization_nf4.ipynb, which writes out NF4_OFFSET and nf4_levels (the same text as
here: tests/test_notebooks.py checks it).

Both schemes cut the flattened weight into blocks of `blocksize` values and store, per block, one fp32 scale
(the block's absmax) plus one 4-bit code per value:

    w  ~  absmax_block * level[code]        with level[] a fixed table of 16 numbers in [-1, 1]

They differ only in the table: int4 spaces its levels evenly, NF4 puts them at quantiles of a normal
distribution, where most weights are.
"""

from __future__ import annotations

import math

import torch

NF4_OFFSET = 0.9677083  # bitsandbytes' outermost quantile, ~ Phi(1.848); chosen empirically by the QLoRA authors


def _to_blocks(w: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Flatten w to fp32 and cut it into rows of `blocksize` values (the last block zero-padded)."""
    if blocksize <= 0:
        raise ValueError(f"blocksize must be positive, not {blocksize!r}")
    flat = w.detach().reshape(-1).float()
    pad = -flat.numel() % blocksize
    return torch.nn.functional.pad(flat, (0, pad)).view(-1, blocksize)


def _from_blocks(blocks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Undo _to_blocks: drop the padding and give back the original shape."""
    return blocks.reshape(-1)[: math.prod(shape)].view(shape)


def _block_absmax(blocks: torch.Tensor) -> torch.Tensor:
    """One scale per block: the largest |w| in it (an all-zero block gets a tiny scale instead of 0)."""
    return blocks.abs().amax(dim=1).clamp(min=1e-38)


def absmax_quantize(w: torch.Tensor, bits: int = 4, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric blockwise int quantization: (int8 codes shaped like w, fp32 absmax per block).
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    # Symmetric levels -q..q with q = 2^(bits-1) - 1, i.e. -7..7 for 4 bits: 15 of the 16 codes, so that 0 is
    # exact and +-absmax are both representable (the -8 code is left unused, as in bitsandbytes' "int4").
    # code = round(w / absmax * q)
    q = 2 ** (bits - 1) - 1
    blocks = _to_blocks(w, blocksize)
    absmax = _block_absmax(blocks)
    codes = torch.round(blocks / absmax[:, None] * q).clamp(-q, q).to(torch.int8)
    return _from_blocks(codes, w.shape), absmax


def absmax_dequantize(codes: torch.Tensor, absmax: torch.Tensor, bits: int = 4, blocksize: int = 64) -> torch.Tensor:
    """Inverse of absmax_quantize: w_hat = code / q * absmax (fp32, shaped like codes).
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    q = 2 ** (bits - 1) - 1
    blocks = _to_blocks(codes, blocksize)
    return _from_blocks(blocks / q * absmax[:, None], codes.shape)


def nf4_levels(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, computed from normal quantiles as bitsandbytes' create_normal_map does."""
    # QLoRA §3: put the levels at quantiles of N(0, 1) so each level covers the same probability mass.
    # To get an exact 0 with 16 levels the two halves are built separately and share the 0:
    #   positive: Phi^-1 at 9 evenly spaced probabilities from `offset` down to 0.5, dropping 0.5 -> 8 values
    #   negative: -Phi^-1 at 8 evenly spaced probabilities from `offset` down to 0.5, dropping 0.5 -> 7 values
    # then 8 + 7 + 1 (zero) = 16 levels, divided by the largest so they span [-1, 1].
    # (`offset` < 1 because Phi^-1(1) is infinite.) Same precision steps as bitsandbytes (linspace in fp32,
    # quantiles in fp64 like scipy, normalisation in fp32), which makes the table bit-identical to theirs.
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    positive = normal.icdf(torch.linspace(offset, 0.5, 9)[:-1].double()).float()
    negative = -normal.icdf(torch.linspace(offset, 0.5, 8)[:-1].double()).float()
    levels = torch.cat([negative, torch.zeros(1), positive]).sort().values
    return levels / levels.max()


def uniform_levels() -> torch.Tensor:
    """16 evenly spaced levels in [-1, 1] (the strawman NF4 is compared with).
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    return torch.linspace(-1, 1, 16)


def nf4_quantize(w: torch.Tensor, blocksize: int = 64, levels: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4: (uint8 codes 0..15 shaped like w, fp32 absmax per block); each value gets its nearest level.
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    levels = nf4_levels() if levels is None else levels
    blocks = _to_blocks(w, blocksize)
    absmax = _block_absmax(blocks)
    # Every block now lies in [-1, 1]. Multiplying by 1/absmax (not dividing) is what bitsandbytes does; the two
    # differ in the last bit for a few values, enough to flip ~1 code in 10^7 that sits on a midpoint.
    scaled = (blocks * (1.0 / absmax[:, None])).clamp(-1, 1)
    # Nearest level = how many midpoints between neighbouring (sorted) levels lie below the value.
    # A value exactly on a midpoint goes to the lower level (bucketize's right=False), as in bitsandbytes.
    midpoints = (levels[1:] + levels[:-1]) / 2
    codes = torch.bucketize(scaled, midpoints).to(torch.uint8)
    return _from_blocks(codes, w.shape), absmax


def nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, blocksize: int = 64,
                   levels: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of nf4_quantize: w_hat = levels[code] * absmax (fp32, shaped like codes).
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    levels = nf4_levels() if levels is None else levels
    blocks = levels[_to_blocks(codes, blocksize).long()]
    return _from_blocks(blocks * absmax[:, None], codes.shape)


def double_quant_bits(blocksize: int = 64, blocksize2: int = 256, double_quant: bool = True) -> float:
    """Bits stored per weight: the 4-bit code plus its share of the block scales.
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    # Without double quantization each block of 64 weights carries one fp32 absmax: 4 + 32/64 = 4.5 bits.
    # With it (QLoRA §3), the absmaxes are themselves quantized to 8 bits in blocks of 256, each such block
    # keeping one fp32 scale: 4 + 8/64 + 32/(64*256) = 4.127 bits, i.e. 0.127 instead of 0.5 bits of overhead.
    if not double_quant:
        return 4 + 32 / blocksize
    return 4 + 8 / blocksize + 32 / (blocksize * blocksize2)


def reconstruction_error(w: torch.Tensor, w_hat: torch.Tensor) -> dict[str, float]:
    """How far a dequantized tensor is from the original: mean |error|, relative Frobenius error, max |error|.
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    w, w_hat = w.detach().float(), w_hat.detach().float()
    err = w_hat - w
    return {"mean_abs": err.abs().mean().item(),
            "rel_frobenius": (err.norm() / w.norm()).item(),  # ||W_hat - W||_F / ||W||_F
            "max_abs": err.abs().max().item()}


def bnb_nf4_roundtrip(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Quantize and dequantize with bitsandbytes itself (CPU works): (w_hat, packed bytes, quant_state).
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(w.detach().float(), blocksize=blocksize, quant_type="nf4")
    return bnbf.dequantize_4bit(packed, state), packed, state


def unpack_4bit(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """bitsandbytes stores two codes per byte, the FIRST value in the HIGH nibble: byte = c0 << 4 | c1.
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    packed = packed.reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)
    return codes[: math.prod(shape)].view(shape)


def compare_with_bnb(w: torch.Tensor, blocksize: int = 64, levels: torch.Tensor | None = None) -> dict[str, float]:
    """Our NF4 against bitsandbytes' on the same tensor: share of equal codes and largest differences.
    Used in notebooks/01_methods/02_quantization_nf4.ipynb."""
    ours_codes, ours_absmax = nf4_quantize(w, blocksize, levels)
    ours = nf4_dequantize(ours_codes, ours_absmax, blocksize, levels)
    theirs, packed, state = bnb_nf4_roundtrip(w, blocksize)
    theirs_codes = unpack_4bit(packed, w.shape)
    return {"codes_equal": (ours_codes == theirs_codes).float().mean().item(),
            "absmax_max_diff": (ours_absmax - state.absmax).abs().max().item(),
            "dequant_max_diff": (ours - theirs.float()).abs().max().item()}
