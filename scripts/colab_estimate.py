"""How long each notebook takes on a free Colab T4, opened from its badge: an ESTIMATE until someone times one there.

A badge opens a fresh runtime, so a notebook pays for everything itself: the install cell, the hub download of its
model, loading, every run it trains (steps, validation, the answers it generates) and what it does on the CPU. This
script counts that work at the `t4` profile's sizes, notebook by notebook (WORK below, read off each notebook's code),
and prices it with the unit costs below. The work is counted; the unit costs are assumptions, each stated with its
source, and the result is printed as a table (the README's Colab column comes from it):

    python scripts/colab_estimate.py            # the table, minutes per notebook
    python scripts/colab_estimate.py --json     # the same with every term
    python scripts/colab_estimate.py --headers  # write each notebook's estimate into its header

What would make it a measurement: `make gpu-check GPU_CHECK_ARGS="--profile t4"` on a real T4 (scripts/gpu_check.py).
"""

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftkit.chapters.advice.sizes import setup_of as advice_setup  # noqa: E402
from ftkit.chapters.hyperparameters.sizes import sizes as hyperparameter_sizes  # noqa: E402
from ftkit.chapters.methods.sizes import sizes as method_sizes  # noqa: E402

# --- unit costs on a Colab T4 (assumptions) -------------------------------------------------------------------------
INSTALL_MB = 133  # wheels the install cell downloads (pip download of colab/requirements.txt, constraints.txt without
# what Colab keeps; 2026-12-05); pyarrow 42 MB and bitsandbytes 43 MB are most of it
NETWORK_MB_S = 50  # Colab's download rate from PyPI and the Hub: an assumption (reports range from ~30 to 150 MB/s)
INSTALL_OVERHEAD_S = 40  # clone, resolve and unpack: an assumption
KERNEL_S = 15  # imports of torch, transformers, peft, trl in a fresh kernel: an assumption
T4_FLOPS = 65e12  # fp16 tensor cores, NVIDIA T4 datasheet
MFU = 0.30  # share of it a training or evaluation step reaches: an assumption for 0.4-8 B models at these batches
STEP_FLOOR_S = 0.15  # the least a step of the 32-layer SmolLM2-360M takes (kernel launches, optimizer, Python): assumed
RUN_FIXED_S = 6  # load the cached model, build the trainer, prepare the data, per run: an assumption
TOKENS_PER_EXAMPLE = 100  # a course example with its chat template (~90-110 tokens)
DECODE_S = {"small": 0.025, "7b": 0.08}  # one decoding step of a batch, HF generate: an assumption (7B: NF4 kernels)
NEW_TOKENS = 48  # ftkit.generate_answers' max_new_tokens
MODEL_GB = {"small": 0.724, "7b": 15.2, "built-in": 0.098, None: 0}  # SmolLM2-360M-Instruct and Qwen2.5-7B-Instruct
# in bf16 on the Hub; the built-in model's PyPI wheel (chapter 4 trains it on the CPU); None: the notebook loads none
CONVERT_BUILTIN_S = 30  # the built-in model's one-time GGUF conversion (measured here: ~30 s)
PARAMS = {"small": 0.362e9, "7b": 7.62e9}
LOAD_7B_S = 90  # read 15 GB and quantize it to NF4 on the GPU: an assumption
CPU_4_1_S = 124  # 4.1's two CPU processes: its cpu-profile time measured here (2 cores, make site, 2026-11-29)


def runs(profile) -> dict:
    """The work of each notebook at a profile's sizes: training steps [(flops factor, steps, batch)], validation rows
    forwarded, answers generated, separate runs, CPU seconds, model, downloads. Read off each notebook's code."""
    p = profile
    short = max(4, p.max_steps // 3)  # 1.1, 1.3, 1.4 and the explorer: steps = max(4, profile.max_steps // 3)
    lora, full = 4, 6  # FLOPs per parameter and token: LoRA/QLoRA compute no weight gradients for the base
    row = [(lora, 64, 4)]  # one chapter-3 row at the t4 setup: 64 steps of 4 (ftkit.overfitting.SETUPS)
    # validation every 4 steps, then each test row and clean training row at the kept and the last checkpoint (and the
    # wrong labels twice each); answers of the kept model on test and held-out
    row_eval, row_answers = (64 // 4) * p.n_eval + 2 * (p.n_eval + 8), 2 * p.n_eval
    h = hyperparameter_sizes(p)  # chapter 2's sizes at this profile
    seeds, ranks, small_steps = len(h.seeds), (4, 16, 64), math.ceil(h.small_train / p.batch_size)
    m = method_sizes(p)  # 1.3's speed rounds: three fresh models, a warm-up step each, then the timed rounds
    speed = [(meth, 1 + m.speed_rounds * m.speed_steps, p.batch_size) for meth in (full, lora, lora)]
    rank_runs = (len(ranks) + 3 * (len(h.placement_rates) + seeds - 1) + 2 * (len(h.alpha_rates) + 3 * (seeds - 1))
                 + 3 * seeds)  # 2.3's runs at its rank sizes
    return {
        "0": dict(steps=[(lora, p.max_steps, p.batch_size)], eval_rows=p.max_steps // p.eval_every * p.n_eval,
                  answers=2 * p.n_eval + 1, runs=1),
        "1.1": dict(steps=[(full, short, p.batch_size)], runs=0),
        "1.2": dict(answers=3 * max(3, p.n_eval // 5), runs=0),
        "1.3": dict(steps=[(full, short, p.batch_size), (lora, short, p.batch_size), (lora, short, p.batch_size),
                           (full, short, p.batch_size)] + speed, eval_rows=4 * p.n_eval, answers=5 * p.n_eval, runs=7),
        "1.4": dict(steps=[(lora, short, p.batch_size)] * 2, answers=2 * 2 * (p.gen_batch_size // 2), runs=2),
        "1.5": dict(runs=0),  # loads the model for its checks
        # 2.1: the sweeps, the three rates around each method's best on the other seeds, then the too-low run and its
        # continuation at the best rate on every seed
        "2.1": dict(steps=[(m, h.lr_steps, h.lr_batch) for m in (full, lora) for _ in range(h.lr_points + 3 * (seeds - 1))]
                    + [(lora, h.lr_steps, h.lr_batch)] * (2 * seeds),
                    eval_rows=(2 * h.lr_points + 6 * (seeds - 1) + 2 + 2 * seeds) * p.n_eval,
                    runs=2 * h.lr_points + 6 * (seeds - 1) + 2 * seeds),
        "2.2": dict(steps=[(lora, 4, 4), (lora, 6 * 5, 8), (lora, 3, 8), (lora, 4, 8), (lora, 4, 8)], runs=2),
        # 2.3: the rank sweep; three placements (their rates on the first seed, the best one on the others); the rate
        # sweeps at alpha = 2r at two ranks and their three rates on the other seeds; alpha against the rate on every
        # seed (all of these at the rank runs' sizes); capacity at a fixed alpha, each alpha rank on every seed
        "2.3": dict(steps=[(lora, h.rank_steps, h.rank_batch)] * rank_runs
                    + [(lora, max(h.epochs) * small_steps, p.batch_size)] * (len(h.alpha_ranks) * seeds),
                    eval_rows=(rank_runs + len(h.alpha_ranks) * seeds) * p.n_eval,
                    answers=len(ranks) * p.n_eval * bool(h.rank_scored),
                    runs=rank_runs + len(h.alpha_ranks) * seeds),
        # 2.4: one run per epoch count and seed, each peak rate with and without warmup on every seed, the explorer
        "2.4": dict(steps=[(lora, k * small_steps, p.batch_size) for k in h.epochs] * seeds
                    + [(lora, h.warmup_steps, p.batch_size)] * (2 * len(h.warmup_rates) * seeds)
                    + [(lora, short, p.batch_size)],
                    eval_rows=(len(h.epochs) * seeds + 2 * len(h.warmup_rates) * seeds + 2) * p.n_eval,
                    runs=len(h.epochs) * seeds + 2 * len(h.warmup_rates) * seeds + 2),
        "2.5": dict(runs=0),
        # chapter 3 with its rows on Google Drive (ftkit.overfitting.share_rows): each notebook trains only its own rows
        # (3 seeds): 3.1 the baseline's first seed, scored at two checkpoints on training, test and held-out rows; 3.2
        # early stopping, then both rows' other seeds; 3.3 three rows, 3.4 five, each on three seeds
        "3.1": dict(steps=row, eval_rows=row_eval, answers=row_answers + 2 * (8 + 2 * p.n_eval), runs=1),
        "3.2": dict(steps=row * 5, eval_rows=5 * row_eval + p.n_eval, answers=5 * row_answers, runs=5),
        "3.3": dict(steps=row * 9, eval_rows=9 * row_eval, answers=9 * row_answers, runs=9),
        "3.4": dict(steps=row * 15, eval_rows=15 * row_eval, answers=15 * row_answers, runs=15),
        "3.5": dict(runs=0, model=None),  # every row is read back
        "3.6": dict(runs=0, model=None),
        # chapter 4 runs on the CPU in every profile (ftkit.scaling.run_sizes): Colab's 2 CPUs are a laptop's 2 cores
        "4.1": dict(runs=0, cpu_profile_s=True, model="built-in"),
        "4.2": dict(runs=0, model=None),  # arithmetic only
        # chapter 5 with its runs on Google Drive (ftkit.advice.share_runs): 5.1 plain LoRA and two arms, 5.2 full FT and
        # QLoRA, 5.3 four arms (DoRA about twice a LoRA step), each on every seed, each scored on the test rows
        **{name: dict(steps=[(f, a.steps, a.batch_size) for f in factors] * len(a.seeds),
                      eval_rows=len(factors) * len(a.seeds) * (a.steps // a.eval_every + 1) * a.n_eval,
                      answers=len(factors) * len(a.seeds) * a.n_eval, runs=len(factors) * len(a.seeds))
           for a in [advice_setup(p)]
           for name, factors in (("5.1", (lora, lora, lora)), ("5.2", (full, lora)), ("5.3", (lora, 2 * lora, lora, lora)))},
        "5.4": dict(runs=0),  # every run is read back
        "capstone": dict(model="7b", steps=[(6, p.max_steps, p.batch_size)],  # 4 N + 2 N recomputed (checkpointing)
                         eval_rows=p.max_steps // p.eval_every * p.n_eval, answers=2 * p.n_eval, runs=0,
                         loads_7b=2),  # train, then reload the adapter onto a fresh 4-bit base (the merge needs
        # ~18 GB of RAM for a 16-bit 7B: a free runtime's 12.7 GB skip it, as the notebook says)
    }


def seconds(work: dict, profile) -> dict:
    """Each term of one notebook's estimated time on a T4, in seconds."""
    model = work.get("model", "small")
    n = PARAMS.get(model, 0)
    train = sum(steps * max(STEP_FLOOR_S, factor * n * batch * TOKENS_PER_EXAMPLE / (MFU * T4_FLOPS))
                for factor, steps, batch in work.get("steps", []))
    evals = 2 * n * work.get("eval_rows", 0) * TOKENS_PER_EXAMPLE / (MFU * T4_FLOPS)
    batches = math.ceil(work.get("answers", 0) / profile.gen_batch_size)
    terms = {
        "install": INSTALL_MB / NETWORK_MB_S + INSTALL_OVERHEAD_S,
        "download": MODEL_GB[model] * 1000 / NETWORK_MB_S,
        "kernel": KERNEL_S,
        "runs": work.get("runs", 0) * RUN_FIXED_S + work.get("loads_7b", 0) * LOAD_7B_S,
        "training": train,
        "validation": evals,
        "generation": batches * NEW_TOKENS * DECODE_S.get(model, 0),
        "cpu": (CPU_4_1_S + CONVERT_BUILTIN_S) if work.get("cpu_profile_s") else 0,
    }
    return {k: round(v, 1) for k, v in terms.items()}


NOTES = {"capstone": "Qwen2.5-7B-Instruct, 120 steps, its 15 GB download included",
         "4.1": "its two processes run on Colab's CPU", **{f"3.{i}": "with Google Drive keeping the chapter's rows"
                                                         for i in range(1, 7)},
         **{f"5.{i}": "with Google Drive keeping the chapter's runs" for i in range(1, 5)}}


def write_headers(minutes: dict) -> list[Path]:
    """Put each notebook's estimate in its header, after the measured CPU times (the sentence that starts with
    "Colab", up to the end of that paragraph); returns the notebooks changed."""
    from ftkit.tools.notebooks import all_notebooks

    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_check import notebook_paths

    names = {path: "" if "-" in name else name for name, paths in notebook_paths().items() for path in paths}
    changed = []
    for path in all_notebooks(ROOT):
        name = names[path] or f"{int(path.parent.name[:2])}.{int(path.name[:2])}"
        nb = json.loads(path.read_text())
        cell = nb["cells"][0]
        text = "".join(cell["source"])
        start = text.find("Colab", text.find("**Expected run time**"))
        end = text.find("\n\n", start) if text.find("\n\n", start) > 0 else len(text)
        note = f", {NOTES[name]}" if name in NOTES else ""
        sentence = (f"Colab T4 (`t4` profile, opened from its badge{note}): about {max(1, round(minutes[name] / 60))} "
                    "min — *an estimate, not yet measured on a T4*: `scripts/colab_estimate.py` adds up the install, the "
                    "download, and every run the notebook trains at assumed T4 costs.")
        new = text[:start] + sentence + text[end:]
        if new != text:
            cell["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--headers", action="store_true", help="write the estimates into the notebooks' headers")
    args = p.parse_args(argv)
    import ftkit

    profile = ftkit.PROFILES["t4"]
    table = {name: seconds(work, profile) for name, work in runs(profile).items()}
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    if args.headers:
        for path in write_headers({name: sum(t.values()) for name, t in table.items()}):
            print(f"updated {path}")
        return 0
    terms = list(next(iter(table.values())))
    print(f"{'notebook':<10}" + "".join(f"{t:>11}" for t in terms) + f"{'minutes':>9}")
    for name, t in table.items():
        print(f"{name:<10}" + "".join(f"{v:>11.0f}" for v in t.values()) + f"{sum(t.values()) / 60:>9.1f}")
    print("ESTIMATE: counted work at the t4 profile's sizes x assumed T4 unit costs (scripts/colab_estimate.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
