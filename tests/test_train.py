import json
import math

import pytest
from transformers import TrainerCallback

import ftkit
from ftkit.core.train import history_of


def run(profile, data, **kwargs):
    kwargs.setdefault("max_steps", 4)
    kwargs.setdefault("eval_every", 2)
    kwargs.setdefault("batch_size", 4)
    return ftkit.run_experiment(kwargs.pop("method", "lora"), profile=profile, model="tiny-random", data=data,
                                progress=False, **kwargs)


def train_losses(result):
    return result.losses("train_loss")[1]


@pytest.fixture(scope="module")
def lora_result(profile, tiny_data):
    return run(profile, tiny_data, score_splits=("test", "heldout"))


def test_result_holds_every_measurement(lora_result, tiny_data):
    r = lora_result
    assert r.losses("train_loss")[0] == [1, 2, 3, 4]
    assert r.losses("eval_loss")[0] == [2, 4]
    assert len(r.losses("learning_rate")[1]) == 4 and len(r.losses("grad_norm")[1]) == 4
    assert all(math.isfinite(v) for v in train_losses(r))
    assert r.wall_time_s > 0 and r.tokens_per_s > 0 and r.peak_memory_bytes > 0
    assert 0 < r.trainable_params < r.total_params
    assert 0 < r.saved_bytes < 5_000_000  # an adapter, not a model
    assert set(r.scores) == {"test", "heldout"} and r.scores["test"]["n"] == len(tiny_data["test"])
    assert len(r.step_seconds) == 4 and all(s > 0 for s in r.step_seconds)
    assert {"data", "load", "prepare", "train", "save", "score", "setup", "first_step", "steps", "evaluation"} <= set(
        r.seconds)
    parts = ("setup", "first_step", "steps", "evaluation", "other")
    assert sum(r.seconds[k] for k in parts) == pytest.approx(r.wall_time_s, rel=1e-6)  # the training call, split
    assert r.seconds["first_step"] + r.seconds["steps"] == pytest.approx(sum(r.step_seconds))
    json.dumps(r.as_dict())  # serialisable: no model inside


def test_cosine_schedule_decays(lora_result):
    lrs = lora_result.losses("learning_rate")[1]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[0]


def test_same_seed_same_run(lora_result, profile, tiny_data):
    again = run(profile, tiny_data, save=False, score_splits=())
    assert train_losses(again) == train_losses(lora_result)
    other = run(profile, tiny_data, save=False, score_splits=(), seed=1)
    assert train_losses(other) != train_losses(lora_result)


def test_full_finetuning_saves_the_whole_model(profile, tiny_data):
    r = run(profile, tiny_data, method="full", learning_rate=1e-4, max_steps=2, score_splits=())
    assert r.trainable_params == r.total_params
    assert r.saved_bytes > 4 * r.total_params * 0.9  # fp32 weights


def test_qlora_trains_and_saving_mid_training_changes_nothing(profile, tiny_data):
    """FINDINGS §3: checkpoints during QLoRA training must not corrupt the 4-bit base (they did, before the fix)."""
    plain = run(profile, tiny_data, method="qlora", max_steps=6, score_splits=(), save=False)
    saving = run(profile, tiny_data, method="qlora", max_steps=6, score_splits=(), save_every=2)
    assert train_losses(saving) == pytest.approx(train_losses(plain), abs=1e-4)
    assert saving.losses("eval_loss")[1] == pytest.approx(plain.losses("eval_loss")[1], abs=1e-4)


class StopAt(TrainerCallback):
    """Simulates a Colab disconnect: training stops after `step` steps."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_interrupted_run_resumes_where_it_stopped(profile, tiny_data, tmp_path):
    whole = run(profile, tiny_data, max_steps=6, save=False, score_splits=())
    out = str(tmp_path / "run")
    first = run(profile, tiny_data, max_steps=6, save_every=2, output_dir=out, callbacks=[StopAt(4)],
                score_splits=(), save=False)
    assert first.losses("train_loss")[0][-1] == 4
    resumed = run(profile, tiny_data, max_steps=6, save_every=2, output_dir=out, resume=True, score_splits=())
    steps, losses = resumed.losses("train_loss")
    assert steps == [1, 2, 3, 4, 5, 6]  # the history survives the interruption
    assert losses == pytest.approx(train_losses(whole), abs=1e-3)


def test_early_stopping_keeps_the_best_step(profile, tiny_data):
    r = run(profile, tiny_data, max_steps=8, eval_every=1, learning_rate=0.05, early_stopping_patience=1,
            score_splits=())
    steps, losses = r.losses("eval_loss")
    assert r.restored_step == r.best_step == steps[losses.index(min(losses))]  # restored: the argmin


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=0), "learning_rate must be > 0"),
    (dict(learning_rate=-1e-4), "learning_rate must be > 0"),
    (dict(batch_size=0), "batch_size"),
    (dict(warmup_steps=4), "warmup_steps"),
    (dict(optim="paged_adamw_8bit"), "needs a GPU"),
])
def test_impossible_hyperparameters(profile, tiny_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(profile, tiny_data, **kwargs)


def test_empty_dataset_and_too_long_sequences(profile, tiny_data):
    empty = dict(tiny_data)
    empty["train"] = tiny_data["train"].select([])
    with pytest.raises(ValueError, match="training set is empty"):
        run(profile, empty)
    with pytest.raises(ValueError, match="longer than the model's context"):
        ftkit.run_experiment("lora", profile=ftkit.get_profile("ci", max_seq_len=100_000), model="tiny-random",
                             data=tiny_data, progress=False)


def test_history_of_merges_trainer_logs():
    log = [{"step": 1, "loss": 2.0, "learning_rate": 1e-3, "grad_norm": 0.5}, {"step": 1, "eval_loss": 1.5},
           {"step": 1, "train_runtime": 3.0}]
    assert history_of(log) == [{"step": 1, "train_loss": 2.0, "learning_rate": 1e-3, "grad_norm": 0.5},
                               {"step": 1, "eval_loss": 1.5}]


def test_trainer_loss_is_cross_entropy_on_the_answer_only(tiny_data, tmp_path):
    import torch
    from trl import SFTConfig

    from ftkit.core.train import sft_trainer, to_prompt_completion

    model, tokenizer = ftkit.load_model("smollm2-135m", "full")  # real: its loss on prompts and answers differs
    rows = to_prompt_completion(tiny_data["train"].select(range(4)))
    trainer = sft_trainer(model=model, args=SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                                      per_device_train_batch_size=4, activation_checkpointing=False),
                          train_dataset=rows, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    answers = {tokenizer.decode(labels[labels != -100]).split("<|im_end|>")[0] for labels in batch["labels"]}
    assert answers == set(tiny_data["train"].select(range(4))["answer"])  # the answers, nothing of the prompts
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    by_hand = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                batch["labels"][:, 1:].flatten(), ignore_index=-100)
    everything = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                   batch["input_ids"][:, 1:].flatten())
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert abs(by_hand.item() - everything.item()) > 1e-3  # so the check above could fail


def test_result_json_round_trip(lora_result, tmp_path):
    path = tmp_path / "result.json"
    lora_result.save_json(path)
    loaded = ftkit.Result.load_json(path)
    assert loaded.as_dict() == json.loads(json.dumps(lora_result.as_dict()))
    assert loaded.losses("eval_loss") == lora_result.losses("eval_loss") and loaded.trained_model is None
    assert ftkit.Hyperparameters(**loaded.hyperparameters).alpha == lora_result.hyperparameters["lora_alpha"]
    saved_before = {k: v for k, v in lora_result.as_dict().items() if k != "restored_step"} | {"best_step": 7}
    path.write_text(json.dumps(saved_before))  # a file saved when the restored step was called best_step
    assert ftkit.Result.load_json(path).restored_step == 7


def test_batched_generation_equals_one_at_a_time(tiny_data):
    """Left padding: each prompt of a batch continues from its own last token, as if generated alone."""
    model, tokenizer = ftkit.load_model("tiny-random", "full")
    conversations = [row["messages"][:-1] for row in tiny_data["test"].select(range(4))]
    lengths = {len(tokenizer(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                             add_special_tokens=False)["input_ids"]) for c in conversations}
    assert len(lengths) > 1  # the batch really is padded
    batched = ftkit.generate_answers(model, tokenizer, conversations, batch_size=4, max_new_tokens=12, progress=False)
    alone = [ftkit.generate_answers(model, tokenizer, [c], batch_size=1, max_new_tokens=12, progress=False)[0]
             for c in conversations]
    assert batched == alone


class FakeState:
    def __init__(self, seen, log):
        self.num_input_tokens_seen, self.log_history = seen, log


class FakeTrainer:
    def __init__(self, seen, log):
        self.state = FakeState(seen, log)


def test_tokens_per_second_after_a_resume_counts_only_this_calls_work(tmp_path):
    from ftkit.core.train import _eval_seconds, _trained_tokens

    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"num_input_tokens_seen": 600}))
    log = [{"step": 2, "eval_runtime": 5.0}, {"step": 4, "eval_runtime": 7.0}, {"step": 6, "eval_runtime": 3.0}]
    trainer = FakeTrainer(1000, log)
    assert _trained_tokens(trainer, None) == 1000 and _eval_seconds(trainer, None) == 15.0
    assert _trained_tokens(trainer, str(checkpoint)) == 400  # the 600 tokens before the checkpoint are not this call's
    assert _eval_seconds(trainer, str(checkpoint)) == 3.0  # nor the evaluations before it
