"""Chapter 1 · Full fine-tuning vs LoRA vs QLoRA: LoRA and NF4 from scratch, the three methods side by side.

Used in notebooks/01_methods: `ftkit.methods.compare_methods(profile)`, `ftkit.methods.LoRALinear(...)`."""

from __future__ import annotations

from .compare import (
    Comparison,
    compare_methods,
    comparison_table,
    facts,
    plot_comparison,
    theory_table,
    theory_verdicts,
)
from .lora import LoRALinear, add_lora, copy_to_peft, lora_param_count, time_forward
from .quant import (
    absmax_dequantize,
    absmax_quantize,
    bnb_nf4_roundtrip,
    compare_with_bnb,
    double_quant_bits,
    nf4_dequantize,
    nf4_levels,
    nf4_quantize,
    reconstruction_error,
    uniform_levels,
)
from .sizes import SIZES, Sizes, sizes
from .verdicts import SUMMARY_MODELS, SUMMARY_RECIPES, summary_fits, summary_verdicts, table_verdicts

__all__ = [
    "SIZES", "Sizes", "sizes",
    "absmax_dequantize", "absmax_quantize", "add_lora", "bnb_nf4_roundtrip", "compare_methods", "compare_with_bnb",
    "Comparison", "comparison_table", "copy_to_peft", "double_quant_bits", "facts", "lora_param_count", "LoRALinear",
    "nf4_dequantize", "nf4_levels", "nf4_quantize", "plot_comparison", "reconstruction_error", "summary_fits",
    "SUMMARY_MODELS", "SUMMARY_RECIPES", "summary_verdicts", "table_verdicts", "theory_table", "theory_verdicts",
    "time_forward", "uniform_levels"
]
