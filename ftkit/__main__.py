"""Command line: `python -m ftkit {compare,finetune,sweep,bench,prefetch,doctor,sync-notebooks}`."""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 is not "the default": leave the option out for that)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value} (leave the option out for the default)")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text} (LoRA: ~1e-4 to 1e-3; full FT: ~1e-5)")
    return value


def check_model(name: str | None) -> None:
    """Refuse a model name that is neither built in nor a hub id, before any work starts."""
    from ftkit.core.builtin import KNOWN_MODELS

    if name is not None and name not in KNOWN_MODELS and "/" not in name:
        raise ValueError(f"Unknown model {name!r}. Built-in models: {', '.join(KNOWN_MODELS)}; or give a hub id such "
                         "as 'HuggingFaceTB/SmolLM2-360M-Instruct' (needs network).")


def cmd_compare(args) -> int:
    """Full FT vs LoRA vs QLoRA, measured, printed as the theory's table."""
    import time
    from pathlib import Path

    from ftkit.chapters.methods.compare import (
        compare_methods,
        comparison_table,
        default_steps,
        save_plot,
        theory_table,
        theory_verdicts,
    )
    from ftkit.core.claims import show
    from ftkit.core.profiles import get_profile

    start = time.perf_counter()
    profile = get_profile(args.profile)
    check_model(args.model)
    Path(args.out).mkdir(parents=True, exist_ok=True)  # an unwritable folder is refused now, not after the training
    steps = args.steps or default_steps(profile)
    print(f"profile {profile.name!r}: {profile.device}, {profile.precision}; {steps} steps of {profile.batch_size} "
          f"examples per method", flush=True)
    comp = compare_methods(profile, model=args.model, steps=steps, seq_len=args.seq_len)
    print("\n## Measured\n\n" + comparison_table(comp))
    print("\n## The theory's table, with this run's numbers\n\n" + theory_table(comp) + "\n")
    show(theory_verdicts(comp))
    print(f"\nplot: {save_plot(comp, args.out)}")
    print("time per phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in comp.seconds.items())
          + f"; total {time.perf_counter() - start:.0f} s")
    return 0


def cmd_finetune(args) -> int:
    """The profile's default run: the base model's score, then the fine-tuned model's, on test and held-out phrasings."""
    from ftkit.core.data import profile_dataset
    from ftkit.core.models import load_model
    from ftkit.core.profiles import get_profile
    from ftkit.core.hparams import resolve
    from ftkit.core.generation import evaluate_task
    from ftkit.core.train import run_experiment

    profile = get_profile(args.profile)
    check_model(args.model)
    model = args.model or profile.model
    overrides = {} if args.lr is None else {"learning_rate": args.lr}
    hp = resolve(args.method, None, profile, overrides)  # refused here, before the base model is scored
    data = profile_dataset(profile)
    splits = ("test", "heldout")
    base, tokenizer = load_model(model, "full", precision=profile.precision, device=profile.device)
    before = {split: evaluate_task(base, tokenizer, data[split], batch_size=profile.gen_batch_size)[0] for split in splits}
    del base
    result = run_experiment(args.method, hp, profile=profile, model=model, data=data, score_splits=splits)
    hp = result.hyperparameters
    print(f"\n{model}, {args.method}, profile {profile.name!r}: {hp['max_steps']} steps of {hp['batch_size']}, "
          f"lr {hp['learning_rate']:g}, {result.wall_time_s:.0f} s of training")
    print(f"{'split':10}{'exact match before':>20}{'after':>8}{'field accuracy before':>24}{'after':>8}")
    for split in splits:
        b, a = before[split], result.scores[split]
        print(f"{split:10}{b['exact_match']:>20.1%}{a['exact_match']:>8.1%}"
              f"{b['field_accuracy']:>24.1%}{a['field_accuracy']:>8.1%}   (n={a['n']})")
    return 0


def parse_value(text: str):
    """A command-line value as Python: 16 -> int, 1e-4 -> float, true/false/none, anything else a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def cmd_sweep(args) -> int:
    """One hyperparameter over several values, everything else fixed: a table, a PNG and a JSON."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftkit.chapters.hyperparameters.sweeps import sweep
    from ftkit.core.profiles import get_profile

    profile = get_profile(args.profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # an unwritable folder is refused now, not after the sweep
    fixed = {"max_steps": args.steps} if args.steps else {}
    result = sweep(args.name, [parse_value(v) for v in args.values], args.method, profile=profile, **fixed)
    print("\n" + result.table())
    stem = f"{args.name}_{args.method}"
    path_json = result.save_json(out / f"{stem}.json")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    result.plot(ax=axes[0])
    result.plot_curves(ax=axes[1])
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=120)
    print(f"best {args.name}: {result.best()} (lowest final validation loss); sweep took {result.seconds:.0f} s")
    print(f"plot: {out / f'{stem}.png'}\njson: {path_json}")
    return 0


def cmd_prefetch(args) -> int:
    """Download and cache every model a profile needs, for an offline workshop room."""
    from ftkit.core.builtin import builtin_model_dir, short_model_dir, tiny_model_dir
    from ftkit.core.models import load_tokenizer
    from ftkit.core.profiles import PROFILES

    if args.profile not in PROFILES:
        raise ValueError(f"Unknown profile {args.profile!r}: choose one of {', '.join(PROFILES)}")
    profile = PROFILES[args.profile]
    print(f"built-in model: {builtin_model_dir()}")
    print(f"tiny test model: {tiny_model_dir()}")
    print(f"second model shape (the T4 emulation lane): {short_model_dir()}")
    for name in sorted({profile.model, profile.capstone_model}):
        if "/" not in name:  # built in: made from the download above
            continue
        from huggingface_hub import snapshot_download

        print(f"hub model {name}: {snapshot_download(name)}")
        load_tokenizer(name)
    print("Everything this profile needs is cached.")
    return 0


def cmd_bench(args) -> int:
    """The training step against this machine's matmul rate, per method: tokens/s, share, memory, fixed cost."""
    import json
    from pathlib import Path

    from ftkit.core.bench import METHODS, bench_table, run_bench
    from ftkit.core.profiles import get_profile

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable folder is refused now, not after the runs
    profile = get_profile(args.profile)
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(sorted(unknown))}: choose from {', '.join(METHODS)}")
    bench = run_bench(profile, methods=methods, rounds=args.rounds, steps=args.steps)
    kept = json.loads(out.read_text()) if out.exists() else {}  # one entry per profile: the others are kept
    out.write_text(json.dumps(kept | {profile.name: bench}, indent=1) + "\n")
    print("\n" + bench_table(bench) + f"\n\nwritten: {out}")
    return 0


def cmd_doctor(args) -> int:
    from ftkit.tools.doctor import doctor

    return 1 if any(not c.ok for c in doctor()) else 0


def cmd_sync_notebooks(args) -> int:
    """Regenerate badges and install cells (and with --clear, strip outputs) in every notebook."""
    from ftkit.tools.notebooks import all_notebooks, clear_outputs, sync_notebook

    for path in all_notebooks():
        changed = sync_notebook(path)
        if args.clear:
            changed = clear_outputs(path) or changed
        print(f"{'updated' if changed else 'ok     '} {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help=cmd_compare.__doc__)
    p.add_argument("--profile", default=None, help="ci, cpu, gpu or t4 (default: $FTKIT_PROFILE or detected)")
    p.add_argument("--model", default=None, help="smollm2-135m (built in) or a hub id (online)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps per method (default: the profile's, at most 12 on a CPU)")
    p.add_argument("--seq-len", type=positive_int, default=None, help="longest training sequence in tokens")
    p.add_argument("--out", default="outputs/compare", help="folder for the PNG (default: outputs/compare)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("bench", help=cmd_bench.__doc__)
    p.add_argument("--profile", default=None, help="ci, cpu, gpu or t4 (default: $FTKIT_PROFILE or detected)")
    p.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (default 3; medians)")
    p.add_argument("--steps", type=positive_int, default=6, help="steps per run, the first untimed (default 6)")
    p.add_argument("--methods", default=None, help="comma-separated, default: full,lora,qlora")
    p.add_argument("--out", default="results/bench.json", help="the JSON it updates, one entry per profile (default: results/bench.json)")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("finetune", help=cmd_finetune.__doc__)
    p.add_argument("--profile", default=None, help="ci, cpu, gpu or t4 (default: $FTKIT_PROFILE or detected)")
    p.add_argument("--model", default=None, help="smollm2-135m (built in) or a hub id (online)")
    p.add_argument("--method", default="lora", choices=("full", "lora", "qlora"))
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (default: the course's for the method, ftkit.default_hyperparameters)")
    p.set_defaults(func=cmd_finetune)
    p = sub.add_parser("sweep", help=cmd_sweep.__doc__)
    p.add_argument("name", help="the hyperparameter, e.g. learning_rate, batch_size, lora_r, lora_alpha, num_epochs, "
                                "warmup_steps")
    p.add_argument("values", nargs="+", help="its values, e.g. 1e-5 1e-4 1e-3")
    p.add_argument("--method", default="lora", choices=("full", "lora", "qlora"))
    p.add_argument("--profile", default=None, help="ci, cpu, gpu or t4 (default: $FTKIT_PROFILE or detected)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps per run (default: the profile's)")
    p.add_argument("--out", default="outputs/sweep", help="folder for the PNG and JSON (default: outputs/sweep)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("prefetch", help=cmd_prefetch.__doc__)
    p.add_argument("--profile", default="cpu", help="the profile whose models to fetch (default: cpu)")
    p.set_defaults(func=cmd_prefetch)
    sub.add_parser("doctor", help="check this machine and say how to fix each problem").set_defaults(func=cmd_doctor)
    p = sub.add_parser("sync-notebooks", help=cmd_sync_notebooks.__doc__)
    p.add_argument("--clear", action="store_true", help="also strip outputs, execution counts and widget state")
    p.set_defaults(func=cmd_sync_notebooks)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
