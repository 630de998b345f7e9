"""What fine-tuning forgets: how far a fine-tuned model's next-token predictions on general text have moved from the
base model's, text the course's task never touches (written for the course, shipped with it: no hub needed).

Used in notebooks/05_field_advice/02_what_finetuning_forgets.ipynb: `ftkit.advice.general_kl(model, tokenizer, ref)`.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache

import torch

from ftkit.core.generation import generate_answers
from ftkit.core.models import load_model
from ftkit.core.quiet import quiet_loading

# General text in several registers (science, history, cooking, code, arithmetic, everyday prose): no names with ages,
# no cities with jobs, nothing of the course's extraction task.
GENERAL_TEXTS = (
    "Water boils at a lower temperature on a mountain than at sea level, because the air pressure above the pot is "
    "lower, and the molecules need less energy to escape into the air as vapour.",
    "The printing press, developed in Europe in the fifteenth century, made books cheaper and faster to produce, and "
    "within a few decades ideas spread across the continent far more quickly than before.",
    "To make a simple tomato sauce, warm olive oil in a pan, add a chopped onion and a little garlic, cook them until "
    "soft, then add the tomatoes, a pinch of salt, and let it simmer for twenty minutes.",
    "def mean(values):\n    \"\"\"Return the arithmetic mean of a list of numbers.\"\"\"\n    if not values:\n"
    "        raise ValueError(\"mean of an empty list\")\n    return sum(values) / len(values)\n",
    "If a train travels 120 kilometres in one and a half hours, its average speed is 120 divided by 1.5, which is "
    "80 kilometres per hour.",
    "Plants take in carbon dioxide from the air and water from the soil, and with the energy of sunlight they turn "
    "them into sugar and oxygen. This process is called photosynthesis.",
    "The committee met on Tuesday to discuss the budget for next year. After a long debate, the members agreed to "
    "spend more on the library and less on new furniture.",
    "A prime number has exactly two divisors, one and itself. The first few primes are 2, 3, 5, 7, 11 and 13, and "
    "there are infinitely many of them, as Euclid proved.",
    "When you learn a new language, short daily practice tends to work better than long sessions once a week, "
    "because memory is strengthened by being recalled again and again.",
    "The moon has no light of its own: it reflects the light of the sun. Its phases come from how much of its lit "
    "half we can see from the earth as it travels around us each month.",
    "Dear neighbours, the street will be closed for repairs on Saturday morning. Please move your cars before eight "
    "o'clock. Thank you for your patience.",
    "In a spreadsheet, a formula always begins with an equals sign. Typing =SUM(A1:A10) adds up the numbers in the "
    "first ten cells of column A.",
    "The old lighthouse stood at the end of the cliff, its white paint peeling in the salty wind. Nobody had lit its "
    "lamp for years, but the fishermen still looked for it on their way home.",
    "Vaccines train the immune system by showing it a harmless piece or version of a germ, so that it can recognise "
    "and fight the real one quickly if it ever meets it.",
    "for i in range(3):\n    print(i * i)\n# prints 0, 1 and 4, one per line\n",
    "A good night's sleep helps the body recover and the mind consolidate what it learned during the day; most "
    "adults need between seven and nine hours.",
)

# Questions in chat form, answered greedily before and after fine-tuning: what a user of the tuned model would see.
GENERAL_PROMPTS = (
    "What is the capital of Japan?",
    "Give me one tip for sleeping better.",
    "What is 12 times 7?",
)


def text_logprobs(model, tokenizer, texts=GENERAL_TEXTS) -> list[torch.Tensor]:
    """Each text's next-token log-probabilities under a model: one [tokens - 1, vocabulary] fp32 tensor per text."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, dim=-1).cpu())
    return out


@cache
def reference_logprobs(model_name: str, profile, texts=GENERAL_TEXTS) -> list[torch.Tensor]:
    """The base model's next-token log-probabilities on the general texts, loaded as every arm loads its base (the
    profile's precision): the reference each fine-tuned model is measured against (computed once per process)."""
    with quiet_loading():
        base, tokenizer = load_model(model_name, "full", precision=profile.precision, device=profile.device)
    try:
        return text_logprobs(base, tokenizer, texts)
    finally:
        del base


def general_kl(model, tokenizer, reference: list[torch.Tensor], texts=GENERAL_TEXTS, *, adapters: bool = True
               ) -> list[float]:
    """Per text, the mean over its tokens of KL(base || model): how many nats the model's next-token distribution has
    moved from the base model's where the base predicts. 0 for the base itself; adapters=False measures a peft model
    with its adapters switched off (for QLoRA: what 4-bit quantization alone moved)."""
    context = nullcontext() if adapters else model.disable_adapter()
    with context:
        tuned = text_logprobs(model, tokenizer, texts)
    return [float((ref.exp() * (ref - new)).sum(-1).mean()) for ref, new in zip(reference, tuned, strict=True)]


def general_answers(model, tokenizer, prompts=GENERAL_PROMPTS, *, progress: bool = False) -> list[str]:
    """A model's greedy answers to the general questions (32 new tokens at most)."""
    return generate_answers(model, tokenizer, [[{"role": "user", "content": q}] for q in prompts],
                            max_new_tokens=32, progress=progress)
