"""`make lab`: JupyterLab starts on 127.0.0.1, serves the course notebooks, and has the widget support the chapter-2
explorer needs (issue 12)."""

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@contextlib.contextmanager
def jupyter_lab(root: Path, env: dict[str, str | None] | None = None):
    """JupyterLab as `make lab` starts it (127.0.0.1, --ServerApp.root_dir=root), on a free port with a token, and
    temp JUPYTER_* dirs; yields (base url, token). env: variables to set for the server, and the kernels it starts
    (which get its environment); None removes one. PYTEST_CURRENT_TEST is always removed: `make lab` has none, and a
    kernel that sees it takes itself for nbmake's (ftkit.hyperparameters.has_widget_frontend)."""
    port, token = _free_port(), secrets.token_hex(16)
    home = Path(tempfile.mkdtemp(prefix="jupyter-"))  # no user settings, workspaces or runtime files leak in or out
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "PYTEST_CURRENT_TEST": None, **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")  # CI runs as root; `make lab` adds it there too
    log = home / "lab.log"  # a file, not a pipe nobody reads: a long session's log would fill one and stall the server
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited:\n{log.read_text()[-3000:]}")
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer on 127.0.0.1 within 60 s")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    with jupyter_lab(ROOT) as server:
        yield server


def test_lab_serves_the_course_notebooks(lab):
    base, token = lab
    listing = json.loads(_get(f"{base}/api/contents/notebooks?token={token}"))
    names = {item["name"] for item in listing["content"]}
    assert "00_start_here.ipynb" in names
    notebook = json.loads(_get(f"{base}/api/contents/notebooks/00_start_here.ipynb?token={token}"))
    assert notebook["type"] == "notebook" and notebook["content"]["cells"]


def test_lab_page_loads_with_widget_support(lab):
    base, token = lab
    page = _get(f"{base}/lab?token={token}")
    assert "jupyter-config-data" in page
    assert "@jupyter-widgets/jupyterlab-manager" in page  # ipywidgets render (the chapter-2 explorer)


def test_lab_refuses_requests_without_the_token(lab):
    base, _ = lab
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(f"{base}/api/contents/notebooks")
    assert err.value.code == 403
