"""Everything CI cannot check, in one call on whatever CUDA GPU is at hand: writes results/gpu_check.json.

1. the machine: GPU, compute capability, memory, library versions, whether the Hugging Face Hub answers;
2. a throughput probe: steady-state tokens/s of full FT, LoRA and QLoRA on the profile's model at its batch;
3. at the same time, in separate processes: every notebook in the profile (nbmake, one process each, the chapter-3
   notebooks in order in one), scripts/gpu_memory_check.py (the estimator against CUDA's peaks) and
   scripts/t4_emulation.py (the capstone's recipe under a T4's 14.75 GiB);
4. one JSON: notebook times and outcomes, estimator/measured ratios, the capstone's peak, and how it all ran.

    make gpu-check                                   # the detected profile (t4 below compute capability 8.0, else gpu)
    python scripts/gpu_check.py --profile t4 --deadline 480 --notebooks 1.3 1.4 capstone

Offline (no Hub), the profile's hub models are their real architectures with random weights (FTKIT_RANDOM_WEIGHTS=1,
ftkit.core.builtin.random_weights_dir): memory, speed and every code path are real, the scores and verdicts are not. The
JSON and the output say which. Needs a CUDA GPU; a run that outlives --deadline stops what is left and says so.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Notebooks by short name, in the order they start: the slowest first (chapter 3 is one job: its notebooks share rows),
# then those a T4 broke before issue 20, then the rest.
CHAPTER_3 = "3.1-3.6"
CHAPTER_5 = "5.1-5.4"  # like chapter 3, its notebooks share their measured runs: one job, in order
ORDER = [CHAPTER_3, CHAPTER_5, "capstone", "1.3", "1.4", "2.2", "2.3", "2.5", "2.1", "2.4", "0", "1.1", "1.2", "1.5", "4.1", "4.2"]
MEMORY_CHECK_MODELS = ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M", "Qwen/Qwen2.5-0.5B"]


def notebook_paths() -> dict[str, list[Path]]:
    """Short name -> the notebook files of that job."""
    from ftkit.tools.notebooks import all_notebooks

    jobs = {}
    for path in all_notebooks(ROOT):
        parts = path.relative_to(ROOT).parts
        if parts[0] == "colab":
            jobs["capstone"] = [path]
        elif len(parts) == 2:
            jobs["0"] = [path]
        elif parts[1].startswith(("03_", "05_")):
            jobs.setdefault(CHAPTER_3 if parts[1].startswith("03_") else CHAPTER_5, []).append(path)
        else:
            jobs[f"{int(parts[1][:2])}.{int(parts[2][:2])}"] = [path]
    return jobs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="ci|cpu|gpu|t4 (default: detected from the GPU)")
    p.add_argument("--notebooks", nargs="*", default=None, help=f"short names (default: all): {' '.join(ORDER)}")
    p.add_argument("--workers", type=int, default=4, help="notebooks run at a time (they share the GPU)")
    p.add_argument("--deadline", type=float, default=3000, help="seconds after which what is left is stopped")
    p.add_argument("--nb-timeout", type=int, default=1800, help="seconds one notebook may run")
    p.add_argument("--skip", nargs="*", default=[], choices=["probe", "memory", "t4", "notebooks"])
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check.json"))
    p.add_argument("--logs", default=str(ROOT / "build" / "gpu-check"), help="executed notebooks and logs")
    p.add_argument("--smoke", action="store_true", help="the same orchestration on the CPU (ci profile, for tests)")
    return p.parse_args(argv)


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub answers (it never does on the lent GPU machines)."""
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/HuggingFaceTB/SmolLM2-135M", timeout=timeout)
        return True
    except OSError:
        return False


def machine() -> dict:
    import torch

    from ftkit.tools.doctor import measured_with

    gpu = {"gpu": "none (CPU smoke run)"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"gpu": props.name, "capability": ".".join(map(str, torch.cuda.get_device_capability())),
               "gpu_gib": round(props.total_memory / 2**30, 2)}
    return {**gpu, "cpus": os.cpu_count(), "versions": measured_with(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def probe(profile, steps: int = 12) -> dict:
    """Steady-state training speed of each method on the profile's model and batch (the first 2 steps not timed)."""
    from transformers import TrainerCallback

    import ftkit

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    out = {}
    for method in ("full", "lora", "qlora"):
        timer = StepTimes()
        r = ftkit.run_experiment(method, profile=profile, max_steps=steps, eval_every=steps, save=False,
                                 score_splits=(), progress=False, keep_model=False, callbacks=[timer])
        seconds = (timer.times[-1] - timer.times[1]) / (len(timer.times) - 2)
        tokens = r.tokens_per_s * r.wall_time_s / steps  # non-padding tokens per step, as trained
        out[method] = {"s_per_step": seconds, "tokens_per_step": tokens, "tokens_per_s": tokens / seconds,
                       "trainable_params": r.trainable_params, "total_params": r.total_params,
                       "peak_gib": r.peak_memory_bytes / 2**30, "final_loss": r.final("train_loss")}
        print(f"probe {method:5}: {seconds * 1000:6.0f} ms/step, {tokens / seconds:7.0f} tokens/s, "
              f"peak {r.peak_memory_bytes / 2**30:.2f} GiB", flush=True)
    return out


class Jobs:
    """Subprocesses that run side by side until they finish or the deadline passes."""

    def __init__(self, deadline: float, logs: Path):
        self.deadline, self.logs, self.procs, self.lock = deadline, logs, set(), threading.Lock()

    def left(self) -> float:
        return self.deadline - time.time()

    def run(self, name: str, cmd: list[str], env: dict, cwd: Path, timeout: float) -> dict:
        """Run one command; returns status ("passed" | "failed" | "timed out" | "stopped at the deadline"), seconds
        and the end of its output."""
        if self.left() < 30:
            return {"status": "not started: deadline", "seconds": 0.0}
        log = self.logs / f"{name}.log"
        start = time.time()
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            with self.lock:
                self.procs.add(proc)
            try:
                proc.wait(timeout=max(1.0, min(timeout, self.left())))
                status = "passed" if proc.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                status = "timed out" if self.left() > 1 else "stopped at the deadline"
            finally:
                with self.lock:
                    self.procs.discard(proc)
        tail = log.read_text(errors="replace")[-3000:]
        print(f"{name}: {status} in {time.time() - start:.0f} s", flush=True)
        return {"status": status, "seconds": round(time.time() - start, 1), "tail": tail if status != "passed" else ""}


def notebook_job(jobs: Jobs, name: str, paths: list[Path], env: dict, work: Path, timeout: int) -> dict:
    """Run a job's notebooks in order with nbmake (executed copies kept under work/); stop at the first failure."""
    results = []
    for path in paths:
        rel = path.relative_to(ROOT)
        cmd = [sys.executable, "-m", "pytest", "--nbmake", f"--nbmake-timeout={timeout}", "--overwrite", "-q",
               "-p", "no:cacheprovider", str(rel)]
        r = jobs.run(f"nb-{rel.stem}", cmd, env, work, timeout + 60)
        results.append({"notebook": rel.as_posix(), **r})
        if r["status"] != "passed":
            break
    return {"job": name, "notebooks": results}


def summarise_memory(path: Path) -> dict:
    """The estimator's relative error on the peak and on each bucket, per row of gpu_memory_check.json."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    rows = [{"model": r["model"], "method": r["method"], "seq_len": r["seq_len"],
             "peak_measured_gib": round(r["measured"]["peak_gpu"] / 2**30, 3),
             "peak_estimate_over_measured": round(1 + r["rel_error"]["peak"], 3),
             **{f"{k}_estimate_over_measured": round(1 + v, 3) for k, v in r["rel_error"].items() if k != "peak"}}
            for r in data["rows"]]
    return {"all_within_tolerance": data["all_ok"], "tolerance": data["tolerance"], "rows": rows}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.smoke:
        args.profile, args.skip = "ci", [*args.skip, "memory"]
    elif not torch.cuda.is_available():
        print("gpu_check.py measures on a CUDA GPU and none is visible: nothing was run. CI checks the same code paths "
              "on the CPU (make test: the T4 emulation lane).")
        return 2
    import ftkit
    from ftkit.core.builtin import RANDOM_WEIGHTS_ENV
    from ftkit.core.profiles import detect_profile_name

    start = time.time()
    deadline = start + args.deadline
    logs = Path(args.logs)
    shutil.rmtree(logs, ignore_errors=True)
    work = logs / "executed"
    work.mkdir(parents=True)
    for folder in ("notebooks", "colab"):
        shutil.copytree(ROOT / folder, work / folder)
    for name in ("results", "theory.md"):
        if (ROOT / name).exists():
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)

    online = hub_reachable()
    if not online:
        os.environ[RANDOM_WEIGHTS_ENV] = "1"
    name = args.profile or detect_profile_name()
    os.environ["FTKIT_PROFILE"] = name
    profile = ftkit.get_profile(name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "PYTHONUNBUFFERED": "1"}
    models = ", ".join(sorted({profile.model, profile.capstone_model}))
    weights = (f"real ({models})" if online else f"random-initialised real architectures of {models} and of every "
               "other model a notebook loads (FTKIT_RANDOM_WEIGHTS=1): memory, speed and code paths are real; scores "
               "and verdicts are not")
    report = {"machine": machine(), "profile": profile.as_dict(), "hub": "reachable" if online else "unreachable",
              "weights": weights, "workers": args.workers, "started": report_time(start)}
    print(f"{report['machine']['gpu']} ({report['machine'].get('capability', '-')}), profile {name!r}, weights: "
          f"{report['weights']}", flush=True)

    if "probe" not in args.skip:  # alone on the GPU, before anything else starts
        report["probe"] = probe(profile, steps=4 if args.smoke else 12)
    jobs = Jobs(deadline, logs)
    scripts = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers + 2) as pool:
        if "memory" not in args.skip:
            out = logs / "gpu_memory_check.json"
            scripts["memory"] = pool.submit(jobs.run, "gpu_memory_check", [
                sys.executable, str(ROOT / "scripts" / "gpu_memory_check.py"), "--out", str(out),
                "--models", *MEMORY_CHECK_MODELS], env, ROOT, args.deadline)
        if "t4" not in args.skip:
            scripts["t4"] = pool.submit(jobs.run, "t4_emulation", [
                sys.executable, str(ROOT / "scripts" / "t4_emulation.py"), "--out", str(logs / "t4_emulation.json"),
                *(["--smoke"] if args.smoke else [])], env, ROOT, args.deadline)
        notebook_runs = []
        if "notebooks" not in args.skip:
            all_jobs = notebook_paths()
            chosen = [j for j in ORDER if args.notebooks is None or j in args.notebooks]
            slots = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers)
            notebook_runs = [slots.submit(notebook_job, jobs, j, all_jobs[j], env, work, args.nb_timeout)
                             for j in chosen]
            slots.shutdown(wait=True)
        report["notebooks"] = [f.result() for f in notebook_runs]
        report["scripts"] = {k: {kk: vv for kk, vv in f.result().items() if kk != "tail" or vv}
                             for k, f in scripts.items()}
    report["memory_check"] = summarise_memory(logs / "gpu_memory_check.json")
    t4 = logs / "t4_emulation.json"
    report["t4_emulation"] = json.loads(t4.read_text()) if t4.exists() else {}
    report["seconds"] = round(time.time() - start, 1)
    passed = [n for job in report["notebooks"] for n in job["notebooks"] if n["status"] == "passed"]
    failed = [n for job in report["notebooks"] for n in job["notebooks"] if n["status"] != "passed"]
    report["summary"] = {"notebooks_passed": len(passed), "notebooks_not_passed": [
        f"{n['notebook']}: {n['status']}" for n in failed]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{len(passed)} notebooks passed, {len(failed)} did not "
          f"({', '.join(n['notebook'] + ': ' + n['status'] for n in failed) or '-'}); {report['seconds']:.0f} s; "
          f"wrote {args.out}")
    return 0 if not failed and all(s["status"] == "passed" for s in report["scripts"].values()) else 1


def report_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
