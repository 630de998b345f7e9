"""The chapter-2 explorer (ftkit.hyperparameters.explore): when it shows its widget panel, and the panel in JupyterLab as a learner
uses it (issue 20, item 13: numpy's numpy._pytesttester module made every kernel look like nbmake's, so `make lab`
and Colab got one run with the defaults and no sliders).

The browser test starts JupyterLab as `make lab` does (test_lab.jupyter_lab), opens a one-cell notebook in headless
Chromium (tests/browser.py), runs the cell, checks that sliders and a Train button render as widgets, presses Train
and waits for the redrawn curves. Screenshot: outputs/lab/explorer.png."""

import importlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from test_lab import jupyter_lab

import ftkit
from ftkit.chapters import hyperparameters as sw  # noqa: E402
from ftkit.chapters.hyperparameters import explorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "outputs" / "lab"


@pytest.fixture
def kernel(monkeypatch):
    """This process as a learner's kernel: ipykernel imported, numpy too (so numpy._pytesttester), FTKIT_NO_WIDGETS
    unset. Returns a function that removes PYTEST_CURRENT_TEST (pytest sets it again after the fixtures, as each test's
    call starts) and asks has_widget_frontend."""
    import numpy  # noqa: F401  (imports numpy._pytesttester)

    monkeypatch.setitem(sys.modules, "ipykernel", importlib.import_module("ipykernel"))  # ipywidgets reads its version
    monkeypatch.delenv("FTKIT_NO_WIDGETS", raising=False)
    assert "numpy._pytesttester" in sys.modules

    def frontend() -> bool:
        monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
        return sw.has_widget_frontend()

    return frontend


def test_a_kernel_with_numpy_has_a_widget_frontend(kernel):
    assert kernel()


def test_nbmake_kernel_has_none(kernel, monkeypatch):
    assert "PYTEST_CURRENT_TEST" in os.environ  # as in nbmake's kernel, started by the pytest run during the test
    assert not sw.has_widget_frontend()


def test_ftkit_no_widgets_turns_it_off(kernel, monkeypatch):
    monkeypatch.setenv("FTKIT_NO_WIDGETS", "1")
    assert not kernel()


def test_no_kernel_or_no_ipywidgets_has_none(kernel, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` raises ImportError
    assert not kernel()
    monkeypatch.delitem(sys.modules, "ipywidgets")
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert not kernel()


def test_explore_in_a_kernel_returns_the_panel_without_training(kernel, profile, tiny_data, monkeypatch):
    import ipywidgets as w

    assert kernel()
    monkeypatch.setattr(explorer, "explore_run", lambda *a, **k: pytest.fail("explore() trained before Train was pressed"))
    panel = ftkit.hyperparameters.explore(profile=profile, data=tiny_data)
    assert isinstance(panel, w.VBox)
    assert [c.description for c in panel.children if isinstance(c, w.Button)] == ["Train"]


# ---------------------------------------------------------------------------------------------
# In JupyterLab, in a real browser
# ---------------------------------------------------------------------------------------------

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "explore", "metadata": {}, "outputs": [],
               "source": 'import ftkit\nprofile = ftkit.get_profile("ci")\npanel = ftkit.hyperparameters.explore(profile=profile)'}],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}

CELL = """(() => {
  const cell = document.querySelector('.jp-NotebookPanel .jp-CodeCell');
  const out = cell && cell.querySelector('.jp-OutputArea');
  return cell && {prompt: cell.querySelector('.jp-InputPrompt').innerText.trim(), text: out ? out.innerText : '',
    sliders: out ? out.querySelectorAll('.jupyter-widgets.widget-slider').length : 0,
    dropdowns: out ? out.querySelectorAll('.jupyter-widgets.widget-dropdown').length : 0,
    buttons: out ? [...out.querySelectorAll('button.jupyter-widgets.widget-button')].map(b => b.innerText.trim()) : [],
    images: out ? [...out.querySelectorAll('.widget-output img')].filter(i => i.complete && i.naturalWidth > 0).length
                : 0};
})()"""


@pytest.fixture(scope="module")
def chromium():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium: apt-get install chromium-headless-shell (Debian), or set CHROMIUM")
    browser = Chromium(executable, reach=("127.0.0.1",))  # JupyterLab; nothing else
    yield browser
    browser.close()


@pytest.mark.slow
def test_explorer_panel_trains_in_jupyterlab(chromium, tmp_path):
    (tmp_path / "explorer.ipynb").write_text(json.dumps(NOTEBOOK))
    start, seconds, cell = time.monotonic(), {}, {}  # when each step was reached, printed with the outcome

    def reached(step: str) -> None:
        seconds[step] = round(time.monotonic() - start, 1)

    with jupyter_lab(tmp_path, env={"FTKIT_PROFILE": "ci", "FTKIT_NO_WIDGETS": None}) as (base, token):
        try:
            reached("lab up")
            chromium.open(f"{base}/lab/tree/explorer.ipynb?token={token}", timeout=60)
            chromium.wait_for("!!(document.querySelector('.jp-NotebookPanel .jp-CodeCell .cm-content') && document"
                              ".querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status=idle]'))",
                              timeout=60, what="the notebook open with its kernel idle")
            reached("kernel idle")
            for _ in range(10):  # right as the kernel turns idle, JupyterLab may not take the click yet: press again
                chromium.click(".jp-NotebookPanel .jp-CodeCell .jp-InputArea-editor")  # select the cell, and run it
                chromium.click('.jp-NotebookPanel-toolbar [data-command="notebook:run-cell-and-select-next"]')
                try:
                    chromium.wait_for(f"{CELL}.prompt !== '[ ]:'", timeout=2, what="the cell to run")
                    break
                except TimeoutError:
                    pass
            else:
                pytest.fail("pressing Run did not run the cell")
            # The panel, or (the bug) the cell finished without one: it trained once with the defaults.
            cell = chromium.wait_for(f"(c => c && (c.buttons.length || /^\\[\\d+\\]/.test(c.prompt)) && c)({CELL})",
                                     timeout=90, what="the explorer panel, or the cell to finish")
            assert cell["buttons"] == ["Train"] and cell["sliders"] == 5 and cell["dropdowns"] == 1, cell
            assert "VBox(" not in cell["text"] and cell["images"] == 0, cell
            reached("panel")
            chromium.click(".jp-NotebookPanel .jp-OutputArea button.widget-button")
            cell = chromium.wait_for(f"(c => c.images && /final validation loss/.test(c.text) && c)({CELL})",
                                     timeout=120, what="the curves redrawn after Train")
            assert cell["images"] == 1 and cell["sliders"] == 5, cell
            reached("curves redrawn")
            chromium.evaluate("document.querySelector('.jp-NotebookPanel .jp-OutputArea').scrollIntoView()")
            chromium.screenshot(SHOTS / "explorer.png")
        except BaseException:
            chromium.screenshot(SHOTS / "explorer-failed.png")
            print("cell as the browser showed it:", chromium.evaluate(CELL))
            raise
        finally:
            print("seconds from the start:", seconds, cell.get("text", "").splitlines()[-1:])
