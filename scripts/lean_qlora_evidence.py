"""Does lean QLoRA train as well as peft's standard preparation? The same run, both ways, on the CPU.

Lean QLoRA (ftkit's default, ftkit.core.models.prepare_for_training) leaves the frozen weights that are not 4-bit
(embeddings, norms, lm_head) in the compute dtype; peft's prepare_model_for_kbit_training upcasts them to fp32. Here
the same QLoRA run (built-in SmolLM2-135M, `ci` profile data, same seed, same steps) is trained with each preparation,
under bf16 and fp32 compute, and the training-loss curves, the final validation loss and the test score are compared
against a tolerance fixed before the runs (TOLERANCE below). One more standard run with another seed shows how far two
runs that differ only by chance drift apart, the yardstick for "within noise".

    python scripts/lean_qlora_evidence.py              # writes results/lean_qlora.json (~10 min on 2 quiet cores)
    python scripts/lean_qlora_evidence.py --steps 2 --out /tmp/x.json   # a smoke run
    python scripts/lean_qlora_evidence.py --runs lean-bf16 --out a.json   # one run per process (on busy cores) ...
    python scripts/lean_qlora_evidence.py --merge a.json b.json ...        # ... then one comparison of them all
"""

import argparse
import datetime
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Fixed before measuring: per-step training loss within 0.1 nats, final validation loss within 0.05 nats; exact match
# (with --score) is scored on the profile's 16 test rows, so it is reported, not held to a tolerance.
TOLERANCE = {"train_loss_max_abs_diff": 0.1, "eval_loss_abs_diff": 0.05}


def run(preparation: str, precision: str, steps: int, seed: int, profile, data, score: bool) -> dict:
    """One QLoRA run; its loss curve, final validation loss, score and whether anything was NaN."""
    import ftkit

    result = ftkit.run_experiment("qlora", profile=replace(profile, precision=precision), data=data, max_steps=steps,
                                  seed=seed, eval_every=steps, upcast_frozen_to_fp32=preparation == "standard",
                                  score_splits=("test",) if score else (), save=False, keep_model=False,
                                  progress=False)
    losses = result.losses("train_loss")[1]
    return {"preparation": preparation, "precision": precision, "seed": seed, "train_loss": losses,
            "eval_loss": result.final("eval_loss"),
            "exact_match": result.scores["test"]["exact_match"] if score else None,
            "nan": any(math.isnan(x) for x in losses + [result.final("eval_loss")]),
            "wall_time_s": round(result.wall_time_s, 1)}


def compare(a: dict, b: dict) -> dict:
    """How far two runs' numbers are apart (exact match as a pair, None when not scored)."""
    return {"train_loss_max_abs_diff": max(abs(x - y) for x, y in zip(a["train_loss"], b["train_loss"], strict=True)),
            "eval_loss_abs_diff": abs(a["eval_loss"] - b["eval_loss"]),
            "exact_match": (a["exact_match"], b["exact_match"])}


def within(diff: dict) -> bool:
    """True when a lean-vs-standard difference is inside TOLERANCE."""
    return all(diff[k] <= v for k, v in TOLERANCE.items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="training steps per run")
    p.add_argument("--score", action="store_true", help="also generate and score the test split (slow on a CPU)")
    p.add_argument("--runs", default="standard-bf16,lean-bf16,standard-fp32,lean-fp32,standard-bf16-seed1",
                   help="which runs, in order (the JSON is rewritten after each)")
    p.add_argument("--out", default=str(ROOT / "results" / "lean_qlora.json"), help="JSON output path")
    p.add_argument("--merge", nargs="+", help="JSON files of earlier runs to compare (no training)")
    args = p.parse_args(argv)
    if args.merge:
        runs = {name: r for path in args.merge for name, r in json.loads(Path(path).read_text())["runs"].items()}
        first = json.loads(Path(args.merge[0]).read_text())
        return report(runs, first["date"], first["versions"], first["model"], first["batch_size"], args.out)

    import ftkit
    from ftkit.tools.doctor import measured_with

    profile = ftkit.get_profile("ci")
    data = ftkit.profile_dataset(profile)
    runs = {}
    for name in args.runs.split(","):
        preparation, precision, *seed = name.split("-")
        seed = int(seed[0].removeprefix("seed")) if seed else 0
        print(f"QLoRA, {preparation} preparation, {precision} compute, seed {seed}, {args.steps} steps", flush=True)
        runs[name] = run(preparation, precision, args.steps, seed, profile, data, args.score)
        code = report(runs, datetime.date.today().isoformat(), measured_with(), profile.model, profile.batch_size,
                      args.out)
    return code


def report(runs: dict, date: str, versions: dict, model: str, batch_size: int, path: str) -> int:
    """Compare the runs there are, write the JSON, print the verdict; 0 when every pair is within tolerance."""
    diffs = {p: compare(runs[f"lean-{p}"], runs[f"standard-{p}"]) for p in ("bf16", "fp32")
             if f"lean-{p}" in runs and f"standard-{p}" in runs}
    noise = (compare(runs["standard-bf16-seed1"], runs["standard-bf16"])
             if {"standard-bf16-seed1", "standard-bf16"} <= set(runs) else None)
    out = {"date": date, "versions": versions, "model": model, "batch_size": batch_size, "tolerance": TOLERANCE,
           "runs": runs, "lean_vs_standard": {k: {**d, "within_tolerance": within(d)} for k, d in diffs.items()},
           "seed_noise": noise, "any_nan": any(r["nan"] for r in runs.values())}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    for precision, d in out["lean_vs_standard"].items():
        print(f"{precision}: lean vs standard: train loss max |diff| {d['train_loss_max_abs_diff']:.4f}, eval loss "
              f"|diff| {d['eval_loss_abs_diff']:.4f}, exact match {d['exact_match']}, within tolerance "
              f"{d['within_tolerance']}")
    if noise:
        print(f"seed 0 vs seed 1 (standard, bf16): train loss max |diff| {noise['train_loss_max_abs_diff']:.4f}, "
              f"eval loss |diff| {noise['eval_loss_abs_diff']:.4f}")
    print(f"any NaN: {out['any_nan']}; written to {path}")
    return 0 if all(d["within_tolerance"] for d in out["lean_vs_standard"].values()) and not out["any_nan"] else 1


if __name__ == "__main__":
    sys.exit(main())
