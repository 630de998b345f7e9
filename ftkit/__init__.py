"""ftkit: the helpers behind the course "Fine-tuning LLMs, measured".

One flat module per concern; everything a notebook needs is importable from here:
    profiles  - one setting (FTKIT_PROFILE) chooses every size
    models    - load a model for full / lora / qlora (built-in offline model, hub ids, tiny test model)
    data      - the course dataset (sentence -> JSON record) and its metrics
    hparams   - Hyperparameters: the training settings as one object, defaults per profile and method
    train     - run_experiment: train with TRL's SFTTrainer and measure everything
    claims    - the claims the course tests (CLAIMS.md) and verdict(): "as the theory says" / "differs here"
    memory    - training memory, measured exactly and estimated from a config; which GPU fits
    lora      - LoRA from scratch, checked against peft
    quant     - int4 / NF4 from scratch, checked against bitsandbytes
    compare   - the three methods side by side (the course's main job)
    checks    - exercise checks that say what is wrong
    colab     - the capstone's recipe, memory plan, Drive checkpoints, live loss plot, adapter keeping
    plots     - loss curves, schedules, bar charts (ax=None in, Axes out)
    doctor    - check the machine, each problem with its fix
    notebooks - Colab badges, install cells, notebook hygiene
"""

from .compare import compare_methods, comparison_table
from . import checks, colab
from .data import (FIELDS, augment, format_answer, load_course_dataset, load_user_dataset, parse_answer,
                   profile_dataset, score, score_text)
from .claims import verdict
from .doctor import TESTED_VERSIONS, doctor
from .hparams import METHODS, Hyperparameters, default_hyperparameters
from .lora import LoRALinear, add_lora, copy_to_peft, lora_param_count, time_forward
from .memory import (GPUS, KNOWN_CONFIGS, MemoryBreakdown, estimate_memory, fit_table, fits_on, human_bytes,
                     load_config, measure_memory)
from .models import KNOWN_MODELS, cache_dir, count_parameters, free_memory, load_model, load_tokenizer
from .plots import plot_bars, plot_losses, plot_lr, plot_stacked
from .profiles import PROFILES, Profile, get_profile
from .quant import (absmax_dequantize, absmax_quantize, bnb_nf4_roundtrip, compare_with_bnb, double_quant_bits,
                    nf4_dequantize, nf4_levels, nf4_quantize, reconstruction_error)
from .train import Result, build_trainer, evaluate_task, generate_answers, run_experiment

__all__ = [
    "LoRALinear", "add_lora", "copy_to_peft", "lora_param_count", "time_forward", "absmax_dequantize",
    "absmax_quantize", "bnb_nf4_roundtrip", "compare_with_bnb", "double_quant_bits", "nf4_dequantize", "nf4_levels",
    "nf4_quantize", "reconstruction_error", "checks", "colab", "load_user_dataset", "score_text",
    "GPUS", "KNOWN_CONFIGS", "MemoryBreakdown", "estimate_memory", "fit_table", "fits_on", "load_config",
    "measure_memory", "FIELDS", "KNOWN_MODELS", "METHODS", "PROFILES", "TESTED_VERSIONS", "Profile", "Result", "augment",
    "cache_dir", "free_memory", "compare_methods", "comparison_table", "count_parameters", "doctor", "evaluate_task",
    "format_answer", "human_bytes", "generate_answers", "get_profile", "load_course_dataset", "profile_dataset", "load_model",
    "load_tokenizer", "parse_answer", "plot_bars", "plot_losses", "plot_lr", "plot_stacked", "run_experiment",
    "score", "Hyperparameters", "default_hyperparameters", "build_trainer", "verdict",
]
