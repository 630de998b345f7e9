"""Measured runs kept as JSON, one file per run and settings, so that the notebooks of a chapter train a run once and
read it back after (chapters 3 and 5: `ftkit.overfitting.overfit_run`, `ftkit.advice.arm_run`).

A file's name carries a digest of the run's settings, the library versions and the ftkit code that trains and
measures it: any change of these trains the run again. Files are written whole (a notebook running beside another
never reads half a file).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ftkit.core.runtime import drive_dir, in_colab, mount_drive


def digest(settings: dict, modules=()) -> str:
    """A key for a run's settings, the library versions and the source of `modules` (the code that trains and measures
    it), together with ftkit's training core: any change gives a new key."""
    import peft
    import torch
    import transformers
    import trl

    from ftkit.core import builtin, data, generation, hparams, models, train

    code = "".join(Path(m.__file__).read_text() for m in (data, hparams, builtin, models, train, generation, *modules))
    versions = [torch.__version__, transformers.__version__, peft.__version__, trl.__version__]
    text = json.dumps([settings, versions, hashlib.sha256(code.encode()).hexdigest()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runs_dir(env: str, name: str) -> Path:
    """Where a chapter keeps its measured runs: $env when set (on Colab, share_on_drive sets it to Google Drive), else
    outputs/<name> under the working folder (beside the notebook: a run's output, ignored by git). Delete it to
    measure everything again."""
    return Path(os.environ.get(env) or Path("outputs") / name)


def share_on_drive(env: str, name: str, drive_name: str) -> str:
    """Set up where a chapter's notebooks keep and find their runs, and say where. On Colab, Google Drive (mounted once,
    asking for access; MyDrive/ftkit/<drive_name>): a notebook opened from its badge gets a fresh runtime whose disk the others never see, so
    without Drive every notebook would train again what the notebooks before it measured. Elsewhere, and when Drive is
    refused, runs_dir() as it is."""
    if in_colab() and env not in os.environ and mount_drive():
        os.environ[env] = str(drive_dir(drive_name))
    return f"measured runs are kept in {runs_dir(env, name)}: a run measured once with the same settings is read back"


def run_path(folder: Path, label: str, seed: int, key: str) -> Path:
    """The file of one run: <label>-seed<seed>-<key>.json, the label made safe for a file name."""
    slug = "".join(c if c.isalnum() else "-" for c in label)
    return folder / f"{slug}-seed{seed}-{key}.json"


def read(path: Path) -> dict | None:
    """A kept run's values, or None when it was not measured yet."""
    return json.loads(path.read_text()) if path.is_file() else None


def recall(path: Path, row_type, *, reuse: bool = True):
    """A kept run read back as row_type(**values, from_cache=True), or None when it was not measured yet or reuse is
    off (the chapters' overfit_run and arm_run train it then)."""
    values = read(path) if reuse else None
    return None if values is None else row_type(**values, from_cache=True)


def write(path: Path, values: dict) -> None:
    """Keep a run's values, written whole: notebooks may run side by side, and a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(values, indent=1))
    os.replace(tmp, path)
