import matplotlib.pyplot as plt

import ftkit


def fake_result(method="lora", restored_step=None):
    history = [{"step": s, "train_loss": 2.0 / s, "learning_rate": 1e-3 * (1 - s / 10), "grad_norm": 1.0}
               for s in range(1, 9)]
    history += [{"step": s, "eval_loss": 1.5 / s} for s in (4, 8)]
    return ftkit.Result(method=method, model="tiny-random", hyperparameters={}, history=history,
                        restored_step=restored_step)


def test_plot_losses_draws_train_and_validation_on_the_given_axes():
    fig, ax = plt.subplots()
    assert ftkit.plot_losses(fake_result(restored_step=4), ax=ax) is ax
    labels = [line.get_label() for line in ax.get_lines()]
    assert "lora train" in labels and "lora validation" in labels
    validation = next(line for line in ax.get_lines() if line.get_label() == "lora validation")
    assert list(validation.get_xdata()) == [4, 8]
    plt.close(fig)


def test_plots_accept_several_results_and_make_their_own_axes():
    ax = ftkit.plot_lr({"a": fake_result("full"), "b": fake_result("lora")})
    assert len(ax.get_lines()) == 2
    ax = ftkit.plot_losses({"a": fake_result("full"), "b": fake_result("lora")})
    assert len(ax.get_lines()) == 4
    plt.close("all")


def test_bars_and_stacked_bars_show_the_values():
    ax = ftkit.plot_bars({"full": 210.0, "lora": 450.0}, ylabel="tokens/s")
    assert [round(p.get_height()) for p in ax.patches] == [210, 450]
    ax = ftkit.plot_stacked({"full": {"weights": 4e6, "optimizer": 8e6}, "lora": {"weights": 4e6, "optimizer": 1e5}})
    heights = sorted(round(p.get_height(), 2) for p in ax.patches)
    assert heights == [0.1, 4.0, 4.0, 8.0]
    plt.close("all")
