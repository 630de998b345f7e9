"""Two of the field's claims that are about arithmetic, not about learning, checked exactly on one batch: gradient
accumulation on examples of uneven length, and padding-free batches without cross-contamination.

Used in notebooks/05_field_advice: `ftkit.advice.normalisation_gap(model, tokenizer, rows, k=4)`,
`ftkit.advice.packing_check(model, tokenizer, rows)`.
"""

from __future__ import annotations

import json

import datasets
import torch

from ftkit.core.data import INSTRUCTION, load_course_dataset, prompt_length
from ftkit.core.quiet import quiet_training

SHORT_INSTRUCTION = "Which city does this sentence name? Answer with the city only:\n"


def uneven_data(n_train: int = 16, seed: int = 0) -> datasets.DatasetDict:
    """The course's task with answers of uneven length: two training rows in every four ask for the city alone (two
    or three tokens) instead of the whole JSON (about thirty), as a real instruction set mixes short and long answers.
    In order, micro-batches of two rows alternate short and long (the Trainer shuffles them: uneven by chance)."""
    data = load_course_dataset(n_train=n_train, n_validation=4, n_test=4, n_heldout=1, seed=seed)

    def shorten(row, i):
        if (i // 2) % 2:
            return row
        sentence = row["messages"][0]["content"].removeprefix(INSTRUCTION)
        city = json.loads(row["answer"])["city"]
        return {**row, "answer": city, "messages": [{"role": "user", "content": SHORT_INSTRUCTION + sentence},
                                                    {"role": "assistant", "content": city}]}

    with quiet_training():
        data["train"] = data["train"].map(shorten, with_indices=True)
    return data


def row_gradient(model, tokenizer, row: dict) -> tuple[torch.Tensor, int]:
    """The gradient of one row's summed answer loss (every answer token's cross-entropy, added) over the trainable
    weights, flat, and its number of answer tokens. One row at a time: no padding to shift anything."""
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(next(model.parameters()).device)
    labels = ids.clone()
    labels[0, :prompt_length(tokenizer, row["messages"])] = -100
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits[0, :-1].float()
    target = labels[0, 1:]
    loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
    loss.backward()
    grad = torch.cat([p.grad.detach().float().flatten() for p in model.parameters() if p.requires_grad])
    model.zero_grad(set_to_none=True)
    return grad, int((target != -100).sum())


def normalisation_gap(model, tokenizer, rows: list[dict], k: int) -> dict:
    """One batch of len(rows) examples against k micro-batches of it, by hand from each row's gradient (exact):

    - the big batch's gradient: every answer token of the batch weighs the same, sum of the rows' summed losses / N;
    - k micro-batches normalised each by its own tokens and averaged (the Trainer before transformers' fix, PR 34191:
      a token of a short micro-batch weighs more);
    - k micro-batches normalised by the whole batch's tokens (the fix: num_items_in_batch).

    Returns the two accumulated gradients' distances from the big batch's, relative to its norm, and the tokens of
    each micro-batch."""
    if len(rows) % k:
        raise ValueError(f"{len(rows)} rows do not split into {k} equal micro-batches: give a multiple of {k} rows.")
    grads, tokens = zip(*(row_gradient(model, tokenizer, r) for r in rows), strict=True)
    size = len(rows) // k
    chunks = [range(i, i + size) for i in range(0, len(rows), size)]
    total = sum(tokens)
    big = sum(grads) / total
    per_chunk = sum(sum(grads[i] for i in c) / sum(tokens[i] for i in c) for c in chunks) / k
    fixed = sum(sum(grads[i] for i in c) / total for c in chunks)
    norm = big.norm()
    return {"per_micro_batch": float((per_chunk - big).norm() / norm), "whole_batch": float((fixed - big).norm() / norm),
            "tokens": [sum(tokens[i] for i in c) for c in chunks]}


def packing_check(model, tokenizer, rows: list[dict]) -> dict:
    """Each row's logits computed alone against the same rows flattened into one padding-free row by TRL's own
    collator (position ids restarting at 0 for every example, no attention mask) as in training (no KV cache:
    transformers' Trainer sets model.config.use_cache = False), the same with a KV cache (a loaded model's default:
    transformers then does not read the boundaries from the position ids), and the flat row with position ids running on (one long
    document: each example attends to the ones before it).

    Returns the largest absolute logit difference from the rows alone, for each flat row, and the sizes."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    encoded = [tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False) for r in rows]
    encoded = [list(ids["input_ids"]) if isinstance(ids, dict) else list(ids) for ids in encoded]
    flat = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(
        [{"input_ids": ids} for ids in encoded])
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([ids], device=device)).logits[0].float() for ids in encoded]
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in flat.items() if k != "labels"}
        packed = model(**inputs, use_cache=False).logits[0].float()  # as in training: the Trainer turns the cache off
        cached = model(**inputs, use_cache=True).logits[0].float()  # with a KV cache: the boundaries go unread
        running = torch.arange(flat["input_ids"].shape[1], device=device)[None]
        document = model(input_ids=inputs["input_ids"], position_ids=running, use_cache=False).logits[0].float()
    bounds = torch.tensor([0, *map(len, encoded)]).cumsum(0).tolist()

    def largest(logits):
        return max(float((logits[a:b] - one).abs().max()) for a, b, one in zip(bounds[:-1], bounds[1:], alone, strict=True))

    scale = max(float(one.abs().max()) for one in alone)
    return {"padding_free": largest(packed), "with_cache": largest(cached), "one_document": largest(document), "logit_scale": scale,
            "rows": len(rows), "tokens": bounds[-1]}
