"""Check a machine before the course: device, real bf16, memory, disk, versions, cached model; each problem with its fix.

Used in notebooks/00_start_here.ipynb and the capstone (`ftkit.doctor()`), and as `python -m ftkit doctor`.
"""

from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec

from ftkit.core.runtime import in_colab

# The versions this course was tested with (CI installs exactly these; constraints.txt agrees, a test checks it).
TESTED_VERSIONS = {
    "torch": "2.13.0",
    "transformers": "5.24.0",
    "peft": "0.21.2",
    "trl": "1.16.0",
    "bitsandbytes": "0.50.2",
    "datasets": "5.2.0",
    "accelerate": "1.15.0",
    "gguf": "0.19.0",
}
# What a Colab runtime keeps of its own, whatever constraints.txt pins (the notebooks' install cell leaves it alone):
# its CUDA build of torch, numpy (which that build and Colab's other packages were compiled against), pandas and
# requests (Colab's own google-colab package pins them), and the Jupyter kernel and widget packages that run and render
# the notebook (Colab's front end renders its own ipywidgets).
COLAB_KEEPS = ("torch", "numpy", "pandas", "requests", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets",
               "ipykernel", "ipython", "jupyter_client", "jupyter_core", "traitlets", "tornado", "pyzmq", "comm",
               "debugpy", "matplotlib-inline", "prompt_toolkit", "jedi", "parso")

MIN_RAM_GB = 4  # the built-in model trains in ~2 GB of RAM; a notebook kernel needs the rest
MIN_DISK_GB = 2  # cache (~0.4 GB) + checkpoints of full fine-tuning (~0.6 GB each)


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    value: str
    ok: bool
    fix: str = ""

    def __str__(self) -> str:
        mark = "ok " if self.ok else "FIX"
        return f"[{mark}] {self.name:<22} {self.value}" + (f"\n      -> {self.fix}" if not self.ok else "")


def version_of(package: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def measured_with() -> dict:
    """The versions that decide a measurement, for the results JSON of scripts/ (None: not installed)."""
    import torch

    packages = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")
    return {"python": platform.python_version(), "cuda": torch.version.cuda, **{p: version_of(p) for p in packages}}


def device_checks() -> list[Check]:
    """GPU or CPU, compute capability, real bf16, GPU memory (one line with its fix when torch cannot be imported)."""
    try:
        import torch
    except ImportError as err:
        return [Check("device", f"unknown: torch does not import ({err})", False,
                      f"pip install torch=={TESTED_VERSIONS['torch']} (on Colab: Runtime > Restart session; Colab "
                      "ships its own torch)")]
    if not torch.cuda.is_available():
        from ftkit.core.profiles import cpu_has_bf16

        fix = "On Colab: Runtime > Change runtime type > T4 GPU. On a laptop the CPU profile works, just slower."
        return [Check("device", "CPU only (no CUDA GPU)", not in_colab(), fix),
                Check("bf16 on this CPU", "native (AVX512-BF16/AMX)" if cpu_has_bf16() else "emulated: fp32 is used",
                      True)]
    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability()
    free, total = torch.cuda.mem_get_info()
    real_bf16 = (major, minor) >= (8, 0)
    return [
        Check("device", f"{props.name}", True),
        Check("compute capability", f"{major}.{minor}", True),
        Check("bf16", "real (>= 8.0)" if real_bf16 else "not real below 8.0: training uses fp16", True),
        Check("GPU memory", f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB", free > 2 * 2**30,
              "Another process holds the GPU: Runtime > Restart session, then run again."),
    ]


def host_checks(profile=None) -> list[Check]:
    """RAM, free disk where the cache lives, and the models of the profile (given, or detected) ready to load."""
    from ftkit.core.builtin import cache_dir

    try:
        import psutil

        ram = psutil.virtual_memory().available / 2**30
        checks = [Check("RAM available", f"{ram:.1f} GiB", ram >= MIN_RAM_GB,
                        f"Close other programs: the course needs about {MIN_RAM_GB} GiB free.")]
    except ImportError:
        checks = [Check("RAM available", "unknown: psutil is missing", False, "pip install psutil")]
    try:
        path = cache_dir()
        disk = shutil.disk_usage(path).free / 2**30
        checks.append(Check("disk free (cache)", f"{disk:.1f} GiB at {path}", disk >= MIN_DISK_GB,
                            f"Free {MIN_DISK_GB} GiB there or set FTKIT_CACHE to a bigger disk."))
        checks += model_checks(profile, path)
    except PermissionError as err:
        checks.append(Check("cache", "not writable", False, str(err)))
    return checks


def model_checks(profile, cache) -> list[Check]:
    """One line per model the profile trains: a built-in one must be in the cache (it is made offline from a PyPI
    download); a hub id is downloaded on first use, which needs the network (Colab has it), so it is no problem."""
    try:
        from ftkit.core.profiles import get_profile

        profile = profile or get_profile()
    except Exception as err:  # no torch, or a profile that needs a GPU this machine lacks: reported elsewhere
        return [Check("models", f"unknown: no profile ({type(err).__name__})", True)]
    checks = []
    for name in dict.fromkeys((profile.model, profile.capstone_model)):
        if "/" in name:
            checks.append(Check(f"model {name}", "from the Hugging Face Hub on first use (needs network)", True))
            continue
        cached = (cache / "smollm2-135m" / "model.safetensors").exists()  # every built-in model is made from it
        checks.append(Check(f"model {name}", "cached" if cached else "not cached yet", cached,
                            f"Run `python -m ftkit prefetch --profile {profile.name}` once while online (~30 s)."))
    return checks


def importable(module: str) -> bool:
    """True when Python can find a module (without importing it): False when it is missing or hidden."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version_checks() -> list[Check]:
    """Installed versions against the tested ones; a package that is not importable is missing, whatever pip says."""
    checks = []
    for package, tested in TESTED_VERSIONS.items():
        installed = version_of(package)
        if installed is None or not importable(package):
            checks.append(Check(package, "missing", False, f"pip install {package}=={tested}"))
            continue
        base = installed.split("+")[0]
        same = base == tested or (package in COLAB_KEEPS and in_colab())
        checks.append(Check(package, f"{installed} (tested {tested})", same,
                            f"pip install {package}=={tested}  (other versions may work; this one is tested)"))
    return checks


def doctor(verbose: bool = True, profile=None) -> list[Check]:
    """Run every check (the models of `profile`, default the detected one), print the report, and return the checks
    (problems have ok=False and a fix)."""
    checks = [Check("python", sys.version.split()[0], sys.version_info >= (3, 10), "Use Python 3.10 or newer.")]
    checks += device_checks() + host_checks(profile) + version_checks()
    if verbose:
        print("\n".join(str(c) for c in checks))
        problems = sum(not c.ok for c in checks)
        print(f"\n{problems} problem(s) found." if problems else "\nAll checks passed.")
    return checks
