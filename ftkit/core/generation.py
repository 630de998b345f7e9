"""Generate answers the same way for every model, and score them: greedy decoding with the model's own stop tokens only.

Used by run_experiment's scoring, chapter 1's comparison, chapter 3's rows and the CLI: `ftkit.evaluate_task(model,
tokenizer, data["test"])`.
"""

from __future__ import annotations

from contextlib import contextmanager

from ftkit.core.data import answer_batch, prompt_text, score
from ftkit.core.models import base_model, evaluating, forward_autocast


def generate_answers(model, tokenizer, conversations: list[list[dict]], *, batch_size: int = 16,
                     max_new_tokens: int = 48, progress: bool = True) -> list[str]:
    """Greedy answers of a chat model to each conversation (its last turn is the user's), the same decoding on every
    model (see greedy_config)."""
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"  # batched generation continues each prompt from its real end
    device = next(model.parameters()).device
    config = greedy_config(model, tokenizer, max_new_tokens)
    answers = []
    batches = range(0, len(conversations), batch_size)
    with evaluating(model):
        for i in tqdm(batches, desc="generating", disable=not progress or len(batches) < 2):
            prompts = [prompt_text(tokenizer, c) for c in conversations[i:i + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with own_generation_config(model, config), forward_autocast(model):
                out = model.generate(**enc, generation_config=config)
            answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def greedy_config(model, tokenizer, max_new_tokens: int):
    """Plain greedy decoding: only the model's own stop and start tokens are kept from the generation_config a hub
    model brings (Qwen2.5-Instruct's has sampling fields and a repetition penalty of 1.05), so that a score means the
    same on every model."""
    from transformers import GenerationConfig

    own = base_model(model).generation_config
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            eos_token_id=own.eos_token_id if own.eos_token_id is not None else tokenizer.eos_token_id,
                            bos_token_id=own.bos_token_id, pad_token_id=tokenizer.pad_token_id)


@contextmanager
def own_generation_config(model, config):
    """Make `config` the model's generation_config for a while: generate() fills every field a config leaves unset
    from the model's own (transformers 5), so the hub's fields would come back through that door."""
    target = base_model(model)
    saved, target.generation_config = target.generation_config, config
    try:
        yield
    finally:
        target.generation_config = saved


def evaluate_task(model, tokenizer, dataset, *, batch_size: int = 16, progress: bool = True) -> tuple[dict, list[str]]:
    """Generate an answer for every row of a course split and score it: (scores, answers)."""
    answers = generate_answers(model, tokenizer, [row["messages"][:-1] for row in dataset], batch_size=batch_size,
                               progress=progress)
    return score(answers, list(dataset["answer"])), answers


def answer_logprobs(model, tokenizer, conversations: list[list[dict]], *, batch_size: int = 8
                    ) -> list[tuple[float, int]]:
    """For each whole conversation [user, assistant]: (the sum of the log-probabilities the model gives the answer's
    tokens, their number), in padded batches, the prompt masked as training masks it. Two answers to the same prompt
    compare by their sums: the one the model would rather write is the higher."""
    import torch

    device = next(model.parameters()).device
    out = []
    with evaluating(model), forward_autocast(model):
        for i in range(0, len(conversations), batch_size):
            batch = answer_batch(tokenizer, [{"messages": c} for c in conversations[i:i + batch_size]], max_len=512)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"][:, 1:]
            logp = -torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                                      reduction="none")
            mask = labels != -100
            out += [(logp[j][mask[j]].sum().item(), int(mask[j].sum())) for j in range(len(labels))]
    return out


def row_losses(model, tokenizer, rows, *, batch_size: int = 8) -> list[float]:
    """Each row's own loss on its answer (mean cross-entropy over the answer's tokens): the per-row values whose mean,
    weighted by length, is the validation loss; paired between two checkpoints they give the noise of a difference."""
    return [-total / n for total, n in answer_logprobs(model, tokenizer, [r["messages"] for r in rows],
                                                       batch_size=batch_size)]
