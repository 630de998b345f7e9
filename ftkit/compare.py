"""The course's main job: Full fine-tuning vs LoRA vs QLoRA on one model, same data, same steps, measured.

Used in notebooks/01_methods/03_three_methods_side_by_side.ipynb and as `python -m ftkit compare`.
"""

from __future__ import annotations

from dataclasses import replace

from .data import load_course_dataset
from .memory import human_bytes
from .profiles import Profile, get_profile
from .train import Result, run_experiment

# The theory's learning rates (section 2): LoRA/QLoRA usually higher than full FT.
DEFAULT_LR = {"full": 1e-5, "lora": 1e-3, "qlora": 1e-3}


def compare_methods(profile: Profile | None = None, *, model: str | None = None, steps: int | None = None,
                    seq_len: int | None = None, methods=("full", "lora", "qlora"), learning_rates=None,
                    score_splits=("test",), progress: bool = True) -> dict[str, Result]:
    """Train each method for the same steps on the same data and return {method: Result}."""
    profile = profile or get_profile()
    profile = replace(profile, max_seq_len=seq_len or profile.max_seq_len)
    learning_rates = {**DEFAULT_LR, **(learning_rates or {})}
    data = load_course_dataset(n_train=profile.n_train, n_validation=profile.n_eval, n_test=profile.n_eval,
                               n_heldout=profile.n_eval, seed=0)
    results = {}
    for method in methods:
        if progress:
            print(f"--- {method}: {steps or profile.max_steps} steps, lr {learning_rates[method]:g}", flush=True)
        results[method] = run_experiment(method, profile=profile, model=model, data=data, max_steps=steps,
                                         learning_rate=learning_rates[method], score_splits=score_splits,
                                         progress=progress)
    return results


def comparison_table(results: dict[str, Result]) -> str:
    """A Markdown table with one column per method and one measured row per property."""
    rows = {
        "trainable parameters": lambda r: f"{r.trainable_params:,} ({100 * r.trainable_params / r.total_params:.2f} %)",
        "peak memory": lambda r: human_bytes(r.peak_memory_bytes),
        "tokens / second": lambda r: f"{r.tokens_per_s:.0f}",
        "training time": lambda r: f"{r.wall_time_s:.0f} s",
        "saved on disk": lambda r: human_bytes(r.saved_bytes),
        "validation loss": lambda r: f"{r.final('eval_loss'):.3f}",
        "exact match (test)": lambda r: f"{100 * r.scores.get('test', {}).get('exact_match', float('nan')):.0f} %",
    }
    methods = list(results)
    lines = ["| | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    lines += [f"| {name} | " + " | ".join(cell(results[m]) for m in methods) + " |" for name, cell in rows.items()]
    first = next(iter(results.values()))
    lines.append(f"\npeak memory is {first.peak_memory_kind}.")
    return "\n".join(lines)
