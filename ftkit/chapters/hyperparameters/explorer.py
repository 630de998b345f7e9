"""The explorer: an ipywidgets panel over the six hyperparameters of theory.md section 2; Train runs a short training and
redraws its curves. One function behind the notebook (2.4), the CLI and the widget.
"""

from __future__ import annotations

import os
import sys

import matplotlib.pyplot as plt

from ftkit.chapters.hyperparameters.sizes import sizes
from ftkit.core.data import profile_dataset
from ftkit.core.hparams import resolve
from ftkit.core.plots import plot_losses, plot_lr
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.train import Result, run_experiment


def explore_run(method: str = "lora", *, profile: Profile | None = None, data=None, max_steps: int | None = None,
                **values) -> Result:
    """One short training with the six hyperparameters set by name (the rest at the method's defaults)."""

    profile = profile or get_profile()
    steps = max_steps or sizes(profile).explore_steps
    return run_experiment(method, profile=profile, data=data, save=False, keep_model=False, score_splits=(),
                          eval_every=max(1, steps // 2), progress=False, max_steps=steps, **values)


def draw_run(result: Result, axes=None):
    """The explorer's figure: loss curves and the learning-rate schedule of one run, side by side."""


    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    h = result.hyperparameters
    plot_losses(result, ax=axes[0], title=f"lr {h['learning_rate']:g}, batch {h['batch_size']}, r {h['lora_r']}, "
                                          f"alpha {h['lora_alpha']:g}")
    plot_lr(result, ax=axes[1])
    return axes


def has_widget_frontend() -> bool:
    """True when ipykernel is imported (a Jupyter kernel: JupyterLab, Colab), ipywidgets imports, and neither
    PYTEST_CURRENT_TEST (nbmake's kernel inherits it from the pytest run that starts it) nor FTKIT_NO_WIDGETS is set.
    A live front end is assumed there; it cannot be asked for. Module names are not looked at: numpy imports
    numpy._pytesttester everywhere."""

    if "ipykernel" not in sys.modules or os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("FTKIT_NO_WIDGETS"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def explore(method: str = "lora", *, profile: Profile | None = None, data=None, widgets: bool | None = None):
    """An ipywidgets panel over the six hyperparameters: press Train to run a short training and redraw the curves.
    Without a widget front end (nbmake, a terminal) it trains once with the defaults and draws once; returns that
    run's Result (or the panel)."""
    profile = profile or get_profile()
    data = data if data is not None else profile_dataset(profile)
    defaults = resolve(method, None, profile, {})
    start = {"learning_rate": defaults.learning_rate, "batch_size": defaults.batch_size, "lora_r": defaults.lora_r,
             "lora_alpha": defaults.alpha, "num_epochs": None, "warmup_steps": 0}
    if not (has_widget_frontend() if widgets is None else widgets):
        result = explore_run(method, profile=profile, data=data, **_explorer_values(start))
        draw_run(result)
        plt.show()
        return result
    import ipywidgets as w
    from IPython.display import display

    controls = {
        "learning_rate": w.FloatLogSlider(value=start["learning_rate"], base=10, min=-6, max=-1, description="lr"),
        "batch_size": w.IntSlider(value=start["batch_size"], min=1, max=16, description="batch"),
        "lora_r": w.Dropdown(options=[2, 4, 8, 16, 32, 64], value=start["lora_r"], description="r"),
        "lora_alpha": w.IntSlider(value=int(start["lora_alpha"]), min=1, max=128, description="alpha"),
        "num_epochs": w.FloatSlider(value=0, min=0, max=5, step=0.5, description="epochs (0: steps)"),
        "warmup_steps": w.IntSlider(value=0, min=0, max=10, description="warmup"),
    }
    button, out = w.Button(description="Train", button_style="primary"), w.Output()

    def on_click(_):
        with out:
            out.clear_output(wait=True)
            values = {k: c.value for k, c in controls.items()}
            values["num_epochs"] = values["num_epochs"] or None
            print("training ...")
            try:
                result = explore_run(method, profile=profile, data=data, **_explorer_values(values))
            except ValueError as err:
                print(f"refused: {err}")
                return
            out.clear_output(wait=True)
            draw_run(result)
            plt.show()
            print(f"final validation loss {result.final():.3f} after {result.wall_time_s:.0f} s")

    button.on_click(on_click)
    panel = w.VBox([w.HBox(list(controls.values())[:3]), w.HBox(list(controls.values())[3:]), button, out])
    display(panel)
    return panel


def _explorer_values(values: dict) -> dict:
    """The explorer's controls as run_experiment overrides: epochs, when set, replace the step count."""
    values = dict(values)
    if values.get("num_epochs"):
        values["max_steps"] = None
    else:
        values.pop("num_epochs", None)
    return values
