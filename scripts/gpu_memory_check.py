"""Check ftkit.core.estimate's estimates against real training steps on a CUDA GPU.

For each architecture (random-initialised from ftkit.KNOWN_CONFIGS, no download) and each
method (full, lora, qlora) it runs two training steps in bf16 with fused AdamW, measures the four
buckets on the second step (exact bytes, as on CPU) and torch.cuda.max_memory_allocated, compares
them with estimate_memory / estimate_peak, prints a table and writes JSON. Exits 1 if any estimate
is off by more than --tolerance (default 10 %).

    python scripts/gpu_memory_check.py --out results/gpu_memory_check.json
"""

import argparse
import datetime
import gc
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftkit.core import configs as C  # noqa: E402 (after the path: the repository's ftkit, installed or not)
from ftkit.core import estimate as E  # noqa: E402
from ftkit.core import memory as M  # noqa: E402

DEFAULT_MODELS = ["HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B"]
BUCKETS = ("weights", "gradients", "optimizer", "activations")


def parse_args(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_memory_check.json"), help="JSON output path")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="names from KNOWN_CONFIGS")
    p.add_argument("--methods", nargs="+", default=["full", "lora", "qlora"])
    p.add_argument("--seq-lens", nargs="+", type=int, default=[256, 1024])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--optimizer", default="adamw_torch", choices=["adamw_torch", "adamw_8bit"])
    p.add_argument("--tolerance", type=float, default=0.10)
    return p.parse_args(argv)


def check_one(name: str, method: str, seq_len: int, args) -> dict:
    """Measure one (model, method, seq_len) on the GPU and compare with the estimate."""
    import torch

    model = M.random_model(name, method, precision=args.precision, device="cuda", seed=0)
    batch = M.random_batch(C.model_shape(name).vocab, seq_len, args.batch_size, seed=seq_len)
    measured = M.measure_memory(model, batch, optimizer=args.optimizer, steps=2)
    est = E.estimate_memory(name, method, seq_len=seq_len, batch_size=args.batch_size, precision=args.precision,
                            optimizer=args.optimizer)
    peak_est = E.estimate_peak(est, name, seq_len=seq_len, batch_size=args.batch_size)
    errors = {k: (getattr(est, k) - getattr(measured, k)) / max(1, getattr(measured, k)) for k in BUCKETS}
    errors["peak"] = (peak_est - measured.peak_gpu) / measured.peak_gpu
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return {"model": name, "method": method, "seq_len": seq_len, "batch_size": args.batch_size,
            "measured": measured.as_dict(), "estimated": {**est.as_dict(), "peak": peak_est},
            "rel_error": errors, "ok": all(abs(e) <= args.tolerance for e in errors.values())}


def print_table(rows: list[dict]) -> None:
    """Measured vs estimated, MB, one line per run."""
    head = f"{'model':<28} {'method':<6} {'seq':>5} " + " ".join(f"{k[:6]:>16}" for k in (*BUCKETS, "peak"))
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for k in (*BUCKETS, "peak"):
            meas = r["measured"]["peak_gpu" if k == "peak" else k] / 2**20
            est = r["estimated"][k] / 2**20
            cells.append(f"{meas:7.0f}/{est:<7.0f}" + ("!" if abs(r["rel_error"][k]) > 0.10 else " "))
        print(f"{r['model'].split('/')[-1]:<28} {r['method']:<6} {r['seq_len']:>5} " + " ".join(cells))
    print("(MB measured/estimated; ! = off by more than the tolerance)")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_memory_check.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was run.")
    from ftkit.tools.doctor import measured_with

    rows = []
    for name in args.models:
        for method in args.methods:
            for seq_len in args.seq_lens:
                rows.append(check_one(name, method, seq_len, args))
                print(f"done {name} {method} seq={seq_len}: ok={rows[-1]['ok']}", flush=True)
    print_table(rows)
    result = {"gpu": torch.cuda.get_device_name(0),
              "gpu_total_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
              "versions": measured_with(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "precision": args.precision, "optimizer": args.optimizer, "tolerance": args.tolerance,
              "rows": rows, "all_ok": all(r["ok"] for r in rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}; all within {args.tolerance:.0%}: {result['all_ok']}")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
