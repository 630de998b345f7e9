"""The course dataset: one English sentence about a person -> a strict one-line JSON record.

Everything is synthetic and deterministic from a seed, so every run of every notebook sees the
same data. Example::

    user:      Extract name, age, city, job as JSON:
               At 34, Maria Lopez works as a nurse in Lyon.
    assistant: {"name": "Maria Lopez", "age": 34, "city": "Lyon", "job": "nurse"}

Sentences come from templates. ``TRAIN_TEMPLATES`` are used for train/validation/test;
``HELDOUT_TEMPLATES`` only ever appear in the "heldout" split, to measure whether the model
learned the task or just the phrasings it saw. Records never repeat across splits.
"""

from __future__ import annotations

import json
import random
import re

import datasets

FIELDS = ("name", "age", "city", "job")
INSTRUCTION = "Extract name, age, city, job as JSON:\n"

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Kenji", "Sofia", "Liam", "Chloe", "Omar", "Elena", "Noah",
    "Priya", "Lucas", "Fatima", "Mateo", "Hannah", "Ivan", "Zoe", "Diego", "Amara", "Felix",
    "Yuki", "Leon", "Nadia", "Oscar", "Ines", "Hugo", "Leila", "Tomas", "Grace", "Ravi",
    "Clara", "Emil", "Mei", "Samuel", "Freya", "Karim", "Julia", "Arjun", "Nora", "Pablo",
)  # fmt: skip
LAST_NAMES = (
    "Lopez", "Smith", "Khan", "Tanaka", "Rossi", "Muller", "Dubois", "Novak", "Silva", "Garcia",
    "Kim", "Nguyen", "Okafor", "Larsen", "Kowalski", "Petrov", "Haddad", "Cohen", "Moreau", "Jensen",
    "Fischer", "Sato", "Patel", "Costa", "Brown", "Walker", "Horvat", "Romero", "Mensah", "Lindqvist",
    "Schmidt", "Fernandes", "Murphy", "Chen", "Ali", "Bianchi", "Nakamura", "Weber", "Rahman", "Berg",
)  # fmt: skip
CITIES = (
    "Lyon", "Berlin", "Madrid", "Lisbon", "Dublin", "Oslo", "Vienna", "Prague", "Warsaw", "Valencia",
    "Rome", "Milan", "Porto", "Seville", "Munich", "Hamburg", "Zurich", "Geneva", "Antwerp", "Amsterdam",
    "Rotterdam", "Copenhagen", "Stockholm", "Helsinki", "Budapest", "Krakow", "Toronto", "Chicago",
    "Boston", "Denver",
)  # fmt: skip
JOBS = (
    "nurse", "teacher", "baker", "engineer", "architect", "pilot", "plumber", "chef", "dentist", "lawyer",
    "farmer", "painter", "electrician", "pharmacist", "librarian", "journalist", "accountant", "carpenter",
    "designer", "mechanic", "photographer", "florist", "surgeon", "translator", "veterinarian",
    "firefighter", "cashier", "tailor", "barber", "programmer",
)  # fmt: skip
AGE_RANGE = (18, 80)  # inclusive

# Placeholders: {name} {age} {city} {job}, and {a_job} = job with its article ("a nurse", "an engineer").
TRAIN_TEMPLATES = (
    "{name}, {age}, is {a_job} from {city}.",
    "{name} is {age} years old and works as {a_job} in {city}.",
    "At {age}, {name} works as {a_job} in {city}.",
    "{name} ({age}) lives in {city} and is {a_job}.",
    "Our new {job} in {city} is {name}, age {age}.",
    "{city}-based {job} {name} just turned {age}.",
    "The {job} {name} is {age} and lives in {city}.",
    "{name} works in {city} as {a_job} and is {age}.",
)
HELDOUT_TEMPLATES = (
    "Meet {city}'s {job} {name}, aged {age}.",
    "Born {age} years ago, {name} now earns a living as {a_job} in {city}.",
    "In {city}, {a_job} named {name} celebrated turning {age}.",
    "Age {age}, job {job}, home {city}: that is {name}.",
)
# A row's "template" id indexes ALL_TEMPLATES: 0..7 are training templates, 8.. are held-out ones.
ALL_TEMPLATES = TRAIN_TEMPLATES + HELDOUT_TEMPLATES

SPLITS = ("train", "validation", "test", "heldout")


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Draw n distinct person records {"name", "age", "city", "job"} (keys in FIELDS order)."""
    capacity = (
        len(FIRST_NAMES) * len(LAST_NAMES) * (AGE_RANGE[1] - AGE_RANGE[0] + 1) * len(CITIES) * len(JOBS)
    )
    if not isinstance(n, int) or n < 0 or n > capacity // 10:
        raise ValueError(f"n must be an int between 0 and {capacity // 10}, got {n!r}")
    rng = random.Random(f"records-{seed}")
    records, seen = [], set()
    while len(records) < n:
        record = {
            "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            "age": rng.randint(*AGE_RANGE),
            "city": rng.choice(CITIES),
            "job": rng.choice(JOBS),
        }
        key = tuple(record.values())
        if key not in seen:
            seen.add(key)
            records.append(record)
    return records


def render(record: dict, template: str) -> str:
    """Write the record as a sentence using one template from TRAIN_TEMPLATES or HELDOUT_TEMPLATES."""
    job = record["job"]
    article = "an" if job[0].lower() in "aeiou" else "a"
    return template.format(
        name=record["name"], age=record["age"], city=record["city"], job=job, a_job=f"{article} {job}"
    )


def format_answer(record: dict) -> str:
    """The exact target string: one-line JSON, keys in FIELDS order, default json.dumps separators."""
    return json.dumps({field: record[field] for field in FIELDS})


def to_messages(sentence: str, record: dict | None) -> list[dict]:
    """Chat messages for one example; the assistant turn is left out when record is None (for generation)."""
    messages = [{"role": "user", "content": INSTRUCTION + sentence}]
    if record is not None:
        messages.append({"role": "assistant", "content": format_answer(record)})
    return messages


# --- noise augmentation -------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]+")


def _entity_words(record: dict) -> set[str]:
    return {*record["name"].split(), str(record["age"]), *record["city"].split(), *record["job"].split()}


def _typo(word: str, rng: random.Random) -> str:
    """Swap two neighbouring letters, drop one, or double one (the result always differs from word)."""
    i = rng.randrange(len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[: i + 1] + word[i] + word[i + 1 :]


def _move_city_phrase(text: str, city: str, entities: set[str]) -> str | None:
    """'X works as a nurse in Lyon.' -> 'In Lyon, X works as a nurse.'; None if there is no such phrase."""
    match = re.search(rf",? \b(in|from|to) {re.escape(city)}\b", text)
    if match is None or match.start() == 0:
        return None
    rest = (text[: match.start()] + text[match.end() :]).strip()
    first = rest.split(" ", 1)[0]
    if first not in entities:  # "At 34, ..." -> "In Lyon, at 34, ..."; names keep their capital
        rest = rest[0].lower() + rest[1:]
    return f"{match.group(1).capitalize()} {city}, {rest}"


def _rotate_clauses(text: str) -> str | None:
    """'A, B, C.' -> 'B, C, A.'; None if the sentence has no comma."""
    body, end = (text[:-1], text[-1]) if text[-1:] in ".!?" else (text, "")
    parts = [p.strip() for p in body.split(",")]
    if len(parts) < 2 or not all(parts):
        return None
    return ", ".join(parts[1:] + parts[:1]) + end


def augment(text: str, record: dict, seed: int, strength: float = 1.0) -> str:
    """Add noise to a sentence: word order, casing and typos, never touching the entity values.

    - word order (probability 0.5 * strength): move "in/from/to <city>" to the front, or else
      rotate the comma-separated clauses (the result may be clumsy English: that is the noise);
    - casing (probability 0.5 * strength): lower-case, upper-case or randomly flip the case of
      every word that is not part of an entity;
    - typos (probability 0.25 * strength per non-entity word of >= 3 letters): swap two letters,
      drop one or double one.

    Name, age, city and job are kept verbatim (same spelling and case), so the answer can always be
    copied from the sentence. With strength > 0 the text always changes (a typo is forced if
    nothing else happened).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    if strength == 0.0:
        return text
    rng = random.Random(f"augment-{seed}")
    entities = _entity_words(record)
    original = text

    if rng.random() < 0.5 * strength:
        moved = _move_city_phrase(text, record["city"], entities)
        text = moved if moved is not None else (_rotate_clauses(text) or text)

    tokens = _TOKEN.findall(text)
    editable = [i for i, t in enumerate(tokens) if t.isalpha() and t not in entities]
    if rng.random() < 0.5 * strength:
        mode = rng.choice(("lower", "upper", "flip"))
        for i in editable:
            t = tokens[i]
            if mode == "lower":
                tokens[i] = t.lower()
            elif mode == "upper":
                tokens[i] = t.upper()
            elif rng.random() < 0.5:
                tokens[i] = t.swapcase()
    typo_able = [i for i in editable if len(tokens[i]) >= 3]
    for i in typo_able:
        if rng.random() < 0.25 * strength:
            tokens[i] = _typo(tokens[i], rng)
    out = "".join(tokens)
    if out == original:
        if typo_able:
            i = rng.choice(typo_able)
            tokens[i] = _typo(tokens[i], rng)
        else:
            for i in editable:
                tokens[i] = tokens[i].swapcase()
        out = "".join(tokens)
    return out


# --- the dataset --------------------------------------------------------------------------------


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int (at least 1 row per split), got {value!r}")


def load_course_dataset(
    n_train: int = 400,
    n_validation: int = 64,
    n_test: int = 64,
    n_heldout: int = 64,
    seed: int = 0,
    templates_per_record: int = 1,
    noise: float = 0.0,
    cover_templates: bool = False,
    label_noise: float = 0.0,
) -> datasets.DatasetDict:
    """Build the course dataset: splits "train", "validation", "test" (training templates) and "heldout".

    Each row: {"messages": [user, assistant], "answer": JSON string, "template": id into ALL_TEMPLATES,
    "split_group": "seen_templates" or "heldout_templates", "noisy": bool, "corrupted": bool,
    "clean_answer": JSON string}. Records are distinct and never shared between splits; held-out
    templates appear only in "heldout".
    The train split has n_train * templates_per_record rows (each record written with k different
    training templates, shuffled); a fraction `noise` of them goes through `augment`.
    cover_templates: deal the training templates to the records in turn, so that each is used as
        evenly as possible (all of them once n_train * k >= 8); otherwise each record draws its own.
    label_noise: the share of training records (rounded) whose answer gives one field, city or job
        in turn, a wrong value that the sentence does not contain ("corrupted"; "clean_answer" keeps
        the truth): what a model that fits noise reproduces.
    The other splits are always clean, one template per record.
    """
    counts = {"n_train": n_train, "n_validation": n_validation, "n_test": n_test, "n_heldout": n_heldout}
    for name, value in counts.items():
        _check_count(name, value)
    k_max = len(TRAIN_TEMPLATES)
    if (
        isinstance(templates_per_record, bool)
        or not isinstance(templates_per_record, int)
        or not (1 <= templates_per_record <= k_max)
    ):
        raise ValueError(
            f"templates_per_record must be an int from 1 to {k_max} (the number of TRAIN_TEMPLATES), "
            f"got {templates_per_record!r}"
        )
    for name, value in {"noise": noise, "label_noise": label_noise}.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            what = "a train row is augmented" if name == "noise" else "a training record's label is wrong"
            raise ValueError(f"{name} is the probability that {what}: use a number in [0, 1], got {value!r}")

    # Records are assigned test, heldout, validation first and train last; make_records(n) is a prefix
    # of make_records(n + 1), so changing n_train (a learning curve) keeps the evaluation splits fixed.
    sizes = {"test": n_test, "heldout": n_heldout, "validation": n_validation, "train": n_train}
    records = make_records(sum(sizes.values()), seed=seed)
    n_seen = len(TRAIN_TEMPLATES)
    # Separate random streams: the noise level never changes which records or templates are used,
    # and the rows augmented at noise=0.3 are a subset of those augmented at noise=0.6.
    noise_rng = random.Random(f"noise-{seed}")

    def row(record: dict, template_id: int, augment_seed: int | None = None, label: dict | None = None) -> dict:
        sentence = render(record, ALL_TEMPLATES[template_id])
        noisy = augment_seed is not None
        if noisy:
            sentence = augment(sentence, record, seed=augment_seed)
        label = label or record
        return {
            "messages": to_messages(sentence, label),
            "answer": format_answer(label),
            "template": template_id,
            "split_group": "seen_templates" if template_id < n_seen else "heldout_templates",
            "noisy": noisy,
            "corrupted": label is not record,
            "clean_answer": format_answer(record),
        }

    splits, start = {}, 0
    for split, size in sizes.items():
        chunk = records[start : start + size]
        start += size
        rng = random.Random(f"templates-{seed}-{split}")
        # cover_templates: record i takes the next k of one shuffled order (drawn only then: without it, every split
        # draws exactly what it always did)
        deck = rng.sample(range(n_seen), n_seen) if cover_templates else None
        wrong = _wrong_labels(chunk, label_noise, seed) if split == "train" else {}
        rows = []
        for i, record in enumerate(chunk):
            if split == "train":
                k = templates_per_record
                dealt = [deck[(i * k + j) % n_seen] for j in range(k)] if cover_templates else None
                for t in dealt or rng.sample(range(n_seen), k):
                    u, augment_seed = noise_rng.random(), noise_rng.randrange(2**31)
                    rows.append(row(record, t, augment_seed if u < noise else None, wrong.get(i)))
            elif split == "heldout":
                rows.append(row(record, n_seen + rng.randrange(len(HELDOUT_TEMPLATES))))
            else:
                rows.append(row(record, rng.randrange(n_seen)))
        if split == "train":
            rng.shuffle(rows)
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict({split: splits[split] for split in SPLITS})


def _wrong_labels(records: list[dict], share: float, seed: int) -> dict[int, dict]:
    """{index: the record with a wrong city or job (in turn)} for round(share * len(records)) records, drawn from their
    own random stream (the same records at every share that keeps their count; the wrong value is never the truth)."""
    rng = random.Random(f"label-noise-{seed}")
    chosen = rng.sample(range(len(records)), round(share * len(records)))
    wrong = {}
    for turn, i in enumerate(sorted(chosen)):
        field, values = (("city", CITIES), ("job", JOBS))[turn % 2]
        wrong[i] = dict(records[i], **{field: rng.choice([v for v in values if v != records[i][field]])})
    return wrong


def profile_dataset(profile, seed: int = 0) -> datasets.DatasetDict:
    """The course dataset at a profile's sizes: n_train training rows, n_eval each for validation, test and held-out."""
    return load_course_dataset(n_train=profile.n_train, n_validation=profile.n_eval, n_test=profile.n_eval,
                               n_heldout=profile.n_eval, seed=seed)


# --- scoring ------------------------------------------------------------------------------------


def parse_answer(text: str) -> dict | None:
    """The first JSON object in a model generation (extra text around it is ignored), or None."""
    if not isinstance(text, str):
        return None
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _same(a, b) -> bool:
    """Equal and of the same type: "34" != 34 and 34.0 != 34 (the answer format is strict)."""
    return type(a) is type(b) and a == b


def score(predictions: list[str], references: list[str]) -> dict:
    """Exact match, per-field accuracy and JSON validity of generations against reference answers.

    exact_match: parsed prediction has exactly the FIELDS keys with the right values (and types);
    field_accuracy: mean over rows of the fraction of FIELDS exactly right (invalid JSON counts 0);
    valid_json: fraction of predictions containing a parseable JSON object; n: number of rows.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions for {len(references)} references: pass one each"
        )
    if not predictions:
        raise ValueError("score needs at least one prediction")
    exact = fields = valid = 0.0
    for prediction, reference in zip(predictions, references, strict=True):
        ref = json.loads(reference) if isinstance(reference, str) else reference
        pred = parse_answer(prediction)
        if pred is None:
            continue
        valid += 1
        right = [f in pred and _same(pred[f], ref[f]) for f in FIELDS]
        fields += sum(right) / len(FIELDS)
        exact += all(right) and set(pred) == set(FIELDS)
    n = len(predictions)
    return {"exact_match": exact / n, "field_accuracy": fields / n, "valid_json": valid / n, "n": n}


# --- the learner's own data (capstone) -----------------------------------------------------------

USER_FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv"}


def load_user_dataset(source, *, input_column: str = "input", output_column: str = "output",
                      test_size: float = 0.1, seed: int = 0) -> datasets.DatasetDict:
    """A JSONL/CSV file or a hub dataset id (online only) -> train/validation/test in the course's chat format.

    Each row becomes {"messages": [user: input, assistant: output], "answer": output}; validation and test
    each get a `test_size` share of the rows (at least one row each). Used in colab/capstone_qlora_t4.ipynb.
    """
    from pathlib import Path

    if not 0 < test_size < 0.5:
        raise ValueError(f"test_size is the share of rows for validation and for test each: use (0, 0.5), "
                         f"not {test_size!r}")
    path = Path(source)
    if path.suffix.lower() in USER_FILE_FORMATS:
        if not path.is_file():
            raise FileNotFoundError(f"No data file at {path}: give a .jsonl or .csv file path (or a hub id).")
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if len(lines) < (2 if path.suffix.lower() == ".csv" else 1):  # a CSV's first line is its header
            raise ValueError(f"{path} is empty: it needs one example per line (JSONL) or per row (CSV).")
        table = datasets.load_dataset(USER_FILE_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
    else:
        try:
            table = datasets.load_dataset(str(source), split="train")
        except Exception as err:  # offline, or no such dataset
            raise ValueError(f"Could not load {source!r} as a hub dataset ({type(err).__name__}: {err}). "
                             "Give a .jsonl or .csv file path, or check the id and the network.") from err
    missing = [c for c in (input_column, output_column) if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; columns found: {table.column_names}. "
                         "Name yours with load_user_dataset(..., input_column='...', output_column='...').")
    rows = [(str(x).strip(), str(y).strip()) for x, y in zip(table[input_column], table[output_column], strict=True)
            if x is not None and y is not None and str(x).strip() and str(y).strip()]
    if len(rows) < 3:
        raise ValueError(f"{source} has {len(rows)} usable example(s) (non-empty {input_column!r} and "
                         f"{output_column!r}): it needs at least 3, one each for train, validation and test.")
    rng = random.Random(f"user-{seed}")
    rng.shuffle(rows)
    n_held = max(1, round(test_size * len(rows)))
    n_held = min(n_held, (len(rows) - 1) // 2)
    parts = {"test": rows[:n_held], "validation": rows[n_held:2 * n_held], "train": rows[2 * n_held:]}

    def as_chat(pairs):
        return datasets.Dataset.from_list([{"messages": [{"role": "user", "content": x},
                                                          {"role": "assistant", "content": y}], "answer": y}
                                           for x, y in pairs])

    return datasets.DatasetDict({split: as_chat(parts[split]) for split in ("train", "validation", "test")})


def score_text(predictions: list[str], references: list[str]) -> dict:
    """Exact match of the answer text (stripped) for the learner's own data, where answers need not be JSON."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references: pass one each")
    exact = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    return {"exact_match": exact / len(predictions), "n": len(predictions)}


def prompt_text(tokenizer, conversation: list[dict]) -> str:
    """The chat template's text that asks for the assistant's reply to a conversation (its last turn the user's):
    what generation continues, and what a loss on the answer alone masks."""
    return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def prompt_length(tokenizer, messages: list[dict]) -> int:
    """Tokens before the answer in a whole [user, assistant] conversation: the ones a loss on the answer masks."""
    return len(tokenizer(prompt_text(tokenizer, messages[:-1]), add_special_tokens=False)["input_ids"])


def course_batch(tokenizer, rows, max_len: int) -> dict:
    """One padded batch of whole course conversations (labels = input ids, padding masked with -100).
    Used by ftkit.compare and notebooks/01_methods/03_three_methods_side_by_side.ipynb to measure one step."""
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                    add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def answer_batch(tokenizer, rows, max_len: int = 128) -> dict:
    """course_batch with the loss on the assistant's answer only (prompt tokens masked), as training computes it."""
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    batch = course_batch(tokenizer, rows, max_len)
    tokenizer.padding_side = side
    for i, row in enumerate(rows):
        batch["labels"][i, :prompt_length(tokenizer, row["messages"])] = -100
    return batch


def template_overlap(data) -> set:
    """Phrasings (template ids) found both in the training split and the held-out split: must be empty."""
    train = set(data["train"]["template"])
    return (train & set(data["heldout"]["template"])) | {t for t in train if t >= len(TRAIN_TEMPLATES)}
