"""On a GPU, every tensor fed to a model must be on the model's device: checked on the CPU (issue 20, items 2-3).

A model moved to the "meta" device stands in for one on a GPU: a forward hook records the device of every tensor it
is fed, then stops the forward. A function that forgets to move its inputs feeds CPU tensors and is caught, here as
it would be on a T4. And every call that loads a model, in ftkit and in the notebooks, must pass the device.
"""

import ast
import json

import pytest
import torch

import ftkit
from ftkit.chapters import advice, capstone as colab
from ftkit.tools.notebooks import ROOT, all_notebooks
from ftkit.core.models import base_model

LOADERS = ("load_model", "load_base", "random_model")  # the calls that put a model on a device


class Fed(Exception):
    """Raised by the hook at the model's first forward, with the devices of the tensors it was fed."""


@pytest.fixture(scope="module")
def on_meta():
    """(model, tokenizer): the tiny LoRA model on the meta device, its forward replaced by the device check."""
    model, tokenizer = ftkit.load_model("tiny-random", "lora")
    model.to("meta")

    def check(module, args, kwargs):
        raise Fed(sorted({t.device.type for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor)}))

    base_model(model).register_forward_pre_hook(check, with_kwargs=True)
    return model, tokenizer


@pytest.fixture(scope="module")
def rows():
    return list(ftkit.load_course_dataset(n_train=4, n_validation=2, n_test=2, n_heldout=2, seed=0)["train"])


def fed(call) -> list[str]:
    with pytest.raises(Fed) as caught:
        call()
    return caught.value.args[0]


def test_the_check_catches_cpu_tensors_fed_to_a_gpu_model(on_meta, rows):
    model, tokenizer = on_meta
    assert fed(lambda: model(**ftkit.hyperparameters.answer_batch(tokenizer, rows[:2]))) == ["cpu"]


@pytest.mark.parametrize("function", ["gradient_noise", "measure_memory", "generate_answers", "row_losses",
                                      "prompt_logits", "row_gradient", "packing_check", "text_logprobs"])
def test_ftkit_feeds_the_model_on_its_device(on_meta, rows, function, monkeypatch):
    model, tokenizer = on_meta
    # generate() cannot run on meta tensors (it reads token ids back): the tensors it is given go to the forward
    monkeypatch.setattr(model, "generate", lambda input_ids, attention_mask, **kw: model(input_ids, attention_mask),
                        raising=False)
    batch = ftkit.hyperparameters.answer_batch(tokenizer, rows[:2])
    conversations = [row["messages"][:-1] for row in rows[:2]]
    calls = {
        "gradient_noise": lambda: ftkit.hyperparameters.gradient_noise(model, {2: [batch]}),
        "measure_memory": lambda: ftkit.measure_memory(model, batch),
        "generate_answers": lambda: ftkit.generate_answers(model, tokenizer, conversations, progress=False),
        "row_losses": lambda: ftkit.row_losses(model, tokenizer, rows[:2]),
        "prompt_logits": lambda: colab.prompt_logits(model, tokenizer, conversations),
        "row_gradient": lambda: advice.row_gradient(model, tokenizer, rows[0]),  # chapter 5's accumulation check
        "packing_check": lambda: advice.packing_check(model, tokenizer, rows[:2]),  # chapter 5's padding-free check
        "text_logprobs": lambda: advice.text_logprobs(model, tokenizer, ["General text the task never touches."]),
    }
    assert fed(calls[function]) == ["meta"]


def code_sources():
    """(where, Python source) of every ftkit module, script and notebook code cell (IPython magics blanked)."""
    for path in sorted([*(ROOT / "ftkit").glob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        yield path.relative_to(ROOT).as_posix(), path.read_text()
    for path in all_notebooks():
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                text = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("!", "%"))
                                  else line for line in lines)
                yield f"{path.relative_to(ROOT).as_posix()} cell {i}", text


def loader_calls_without_device(source: str) -> list[int]:
    """Line numbers of calls to a model loader that do not pass device=."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in LOADERS and not any(k.arg == "device" or k.arg is None for k in node.keywords):
                lines.append(node.lineno)
    return lines


def test_every_model_loaded_in_ftkit_and_the_notebooks_gets_the_device():
    missing = {where: lines for where, source in code_sources() if (lines := loader_calls_without_device(source))}
    assert missing == {}


def test_the_static_check_finds_a_load_without_device():
    assert loader_calls_without_device('m, t = ftkit.load_model(profile.model, "lora", precision="bf16")') == [1]
    assert loader_calls_without_device('m, t = load_model(name, device=profile.device)') == []
