"""ftkit: the helpers behind the course "Fine-tuning LLMs, measured".

A core of modules by concern (ftkit/core, which knows no chapter), one home per chapter (ftkit/chapters, each with its
sizes, experiments and verdicts) and tools (ftkit/tools). One public API, `import ftkit`:

- the core's names, flat: `ftkit.get_profile()`, `ftkit.load_model(...)`, `ftkit.run_experiment(...)`,
  `ftkit.estimate_memory(...)`, `ftkit.verdict(...)`, `ftkit.plot_losses(...)`;
- each chapter as a namespace: `ftkit.methods` (1), `ftkit.hyperparameters` (2), `ftkit.overfitting` (3),
  `ftkit.scaling` (4), `ftkit.advice` (5) and `ftkit.capstone`;
- `ftkit.checks` (the exercises' checks) and `ftkit.doctor()` (is this machine ready?).

Importing ftkit imports none of them but quiet (stdlib only): each name is imported on first use (`ftkit.load_model`
imports torch and transformers), so `python -m ftkit doctor` starts fast and still reports on a broken install.
"""

import importlib

from ftkit.core import quiet  # noqa: F401 (stdlib only, eager: it drops bitsandbytes' import message before any use)

# The core's public names, by the module that defines them.
_CORE = {
    "profiles": ["PROFILES", "Profile", "get_profile"],
    "hparams": ["METHODS", "Hyperparameters", "default_hyperparameters"],
    "configs": ["KNOWN_CONFIGS", "LINEAR_NAMES", "ModelShape", "config_for", "config_name", "model_shape"],
    "builtin": ["KNOWN_MODELS", "cache_dir", "model_path"],
    "models": ["autocast", "count_parameters", "disable_bnb_cpu_repacking", "free_memory", "load_base", "load_model",
               "load_tokenizer", "nf4_config", "torch_dtype"],
    "data": ["FIELDS", "answer_batch", "augment", "course_batch", "format_answer", "load_course_dataset",
             "load_user_dataset", "parse_answer", "profile_dataset", "score", "score_text", "template_overlap"],
    "train": ["Result", "build_trainer", "dir_bytes", "eval_loss", "history_of", "loraplus_optimizer", "run_experiment"],
    "generation": ["answer_logprobs", "evaluate_task", "generate_answers", "row_losses"],
    "memory": ["MemoryBreakdown", "human_bytes", "measure_memory", "measure_step", "param_bytes", "quant_state_tensors",
               "random_batch", "random_model", "weights_by_dtype"],
    "estimate": ["GPUS", "base_weight_bytes", "estimate_memory", "fit_table", "fits_on", "lora_params"],
    "claims": ["AGREES", "DIFFERS", "NOT_SETTLED", "Verdict", "recorded", "show", "verdict"],
    "evidence": ["Independent", "Paired", "by_seed", "independent", "mean_of", "paired", "relative_change"],
    "plots": ["plot_bars", "plot_losses", "plot_lr", "plot_stacked"],
}
# Namespaces: the chapters, the exercise checks.
_NAMESPACES = {"methods": "ftkit.chapters.methods", "hyperparameters": "ftkit.chapters.hyperparameters",
               "overfitting": "ftkit.chapters.overfitting", "scaling": "ftkit.chapters.scaling",
               "advice": "ftkit.chapters.advice",
               "capstone": "ftkit.chapters.capstone", "checks": "ftkit.core.checks"}
_TOOLS = {"doctor": "ftkit.tools.doctor", "TESTED_VERSIONS": "ftkit.tools.doctor"}
_WHERE = {name: f"ftkit.core.{module}" for module, names in _CORE.items() for name in names} | _TOOLS
__all__ = sorted([*_WHERE, *_NAMESPACES])


def __getattr__(name: str):
    """Import a public name's module on first use (PEP 562); chapters and checks as namespaces."""
    if name in _NAMESPACES:
        value = importlib.import_module(_NAMESPACES[name])
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'ftkit' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
