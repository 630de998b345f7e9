"""Tests for ftkit/core/data.py: determinism, no leakage between splits, answer format, noise, scoring."""

import json
import re

import pytest

from ftkit.core.data import (
    ALL_TEMPLATES,
    FIELDS,
    HELDOUT_TEMPLATES,
    INSTRUCTION,
    TRAIN_TEMPLATES,
    augment,
    format_answer,
    load_course_dataset,
    make_records,
    parse_answer,
    profile_dataset,
    render,
    score,
    to_messages,
)

SMALL = dict(n_train=60, n_validation=20, n_test=20, n_heldout=20)


@pytest.fixture(scope="module")
def clean():
    return load_course_dataset(**SMALL, seed=0, templates_per_record=2)


def sentence(row: dict) -> str:
    user = row["messages"][0]
    assert user["role"] == "user" and user["content"].startswith(INSTRUCTION)
    return user["content"][len(INSTRUCTION) :]


def template_regex(template: str) -> re.Pattern:
    """A regex that matches exactly the sentences rendered from this template."""
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(".+?" if re.fullmatch(r"\{\w+\}", p) else re.escape(p) for p in parts))


def matching_templates(text: str) -> list[int]:
    return [i for i, t in enumerate(ALL_TEMPLATES) if template_regex(t).fullmatch(text)]


def rows(ds, split):
    return ds[split].to_list()


def test_constants():
    assert FIELDS == ("name", "age", "city", "job")
    assert len(TRAIN_TEMPLATES) >= 6 and len(HELDOUT_TEMPLATES) >= 3
    assert len(set(ALL_TEMPLATES)) == len(ALL_TEMPLATES)
    assert "\n" not in INSTRUCTION.rstrip("\n")


def test_make_records_distinct_and_deterministic():
    records = make_records(500, seed=3)
    assert records == make_records(500, seed=3)
    assert records != make_records(500, seed=4)
    assert len({tuple(r.values()) for r in records}) == 500
    for r in records:
        assert tuple(r) == FIELDS and isinstance(r["age"], int) and 18 <= r["age"] <= 80
    assert len({r["name"] for r in records}) > 300  # varied, not a handful of people


def test_dataset_is_deterministic():
    a = load_course_dataset(**SMALL, seed=1, templates_per_record=3, noise=0.5)
    b = load_course_dataset(**SMALL, seed=1, templates_per_record=3, noise=0.5)
    c = load_course_dataset(**SMALL, seed=2, templates_per_record=3, noise=0.5)
    for split in ("train", "validation", "test", "heldout"):
        assert json.dumps(rows(a, split)) == json.dumps(rows(b, split))
        assert rows(a, split) != rows(c, split)


def test_split_sizes_and_columns(clean):
    assert set(clean) == {"train", "validation", "test", "heldout"}
    assert len(clean["train"]) == 60 * 2
    assert [len(clean[s]) for s in ("validation", "test", "heldout")] == [20, 20, 20]
    for split in clean:
        assert {"messages", "answer", "template"} <= set(clean[split].column_names)


def test_no_record_leakage(clean):
    seen = {}
    for split in clean:
        records = {row["answer"] for row in clean[split]}
        for other, other_records in seen.items():
            assert not records & other_records, f"records shared between {split} and {other}"
        seen[split] = records
    assert len(seen["train"]) == 60  # k phrasings of the same 60 records


def test_no_template_leakage(clean):
    """Check the template ids and, independently, which template the sentence text actually matches."""
    n_seen = len(TRAIN_TEMPLATES)
    for split in clean:
        for row in rows(clean, split):
            matched = matching_templates(sentence(row))
            assert matched == [row["template"]], (split, sentence(row), matched)
            if split == "heldout":
                assert row["template"] >= n_seen
            else:
                assert row["template"] < n_seen, f"held-out template in {split}: {sentence(row)}"
    heldout_used = {row["template"] for row in clean["heldout"]}
    assert len(heldout_used) == len(HELDOUT_TEMPLATES)  # all held-out phrasings get measured


def test_noisy_train_has_no_heldout_template():
    ds = load_course_dataset(**SMALL, templates_per_record=len(TRAIN_TEMPLATES), noise=1.0)
    heldout = [template_regex(t) for t in HELDOUT_TEMPLATES]
    for row in rows(ds, "train"):
        low = sentence(row).lower()
        assert not any(r.fullmatch(low) for r in heldout)
        assert row["template"] < len(TRAIN_TEMPLATES)


def test_templates_per_record_uses_distinct_templates(clean):
    by_record = {}
    for row in rows(clean, "train"):
        by_record.setdefault(row["answer"], []).append(row["template"])
    assert all(len(ts) == 2 and len(set(ts)) == 2 for ts in by_record.values())


def assert_recoverable(text: str, record: dict):
    for field in FIELDS:
        assert str(record[field]) in text, (field, text)


def test_answers_are_strict_json(clean):
    for split in clean:
        for row in rows(clean, split):
            answer = row["answer"]
            record = json.loads(answer)
            assert tuple(record) == FIELDS
            assert isinstance(record["age"], int)
            assert format_answer(record) == answer == json.dumps(record)
            assert "\n" not in answer
            assert row["messages"][1] == {"role": "assistant", "content": answer}
            assert len(row["messages"]) == 2
            assert_recoverable(sentence(row), record)


def test_render_and_messages():
    record = {"name": "Maria Lopez", "age": 34, "city": "Lyon", "job": "engineer"}
    assert (
        render(record, "{name}, {age}, is {a_job} from {city}.")
        == "Maria Lopez, 34, is an engineer from Lyon."
    )
    assert format_answer(record) == '{"name": "Maria Lopez", "age": 34, "city": "Lyon", "job": "engineer"}'
    messages = to_messages("x", record)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert to_messages("x", None) == [{"role": "user", "content": INSTRUCTION + "x"}]


def test_augment_changes_text_but_keeps_entities():
    records = make_records(50, seed=5)
    changed = 0
    for i, record in enumerate(records):
        for t in TRAIN_TEMPLATES:
            text = render(record, t)
            noisy = augment(text, record, seed=i)
            assert noisy == augment(text, record, seed=i)  # deterministic
            assert noisy != text
            changed += noisy.lower() != text.lower()
            assert_recoverable(noisy, record)
            assert augment(text, record, seed=i, strength=0.0) == text
    assert changed > 0.8 * len(records) * len(TRAIN_TEMPLATES)  # more than casing alone


def test_augment_does_all_three_kinds_of_noise():
    record = {"name": "Maria Lopez", "age": 34, "city": "Lyon", "job": "nurse"}
    text = render(record, "At {age}, {name} works as {a_job} in {city}.")
    outputs = {augment(text, record, seed=s) for s in range(200)}
    assert any(o.startswith(("In Lyon", "in Lyon", "IN Lyon", "iN Lyon")) for o in outputs)  # word order
    assert any(re.search(r"\b(WORKS|AS)\b", o) for o in outputs)  # casing: upper
    assert any(o.startswith("at 34") for o in outputs)  # casing: lower
    assert any(not re.search(r"\bworks\b", o, re.IGNORECASE) for o in outputs)  # typo in "works"


def test_noise_parameter():
    quiet = load_course_dataset(**SMALL, noise=0.0)
    loud = load_course_dataset(**SMALL, noise=1.0)
    for row in rows(quiet, "train"):
        assert not row["noisy"]
        assert matching_templates(sentence(row)) == [row["template"]]  # clean text
    loud_rows = rows(loud, "train")
    dirty = sum(not matching_templates(sentence(r)) for r in loud_rows)
    assert dirty > 0.9 * len(loud_rows)
    assert [r["answer"] for r in loud_rows] == [r["answer"] for r in rows(quiet, "train")]
    for row in loud_rows:
        assert_recoverable(sentence(row), json.loads(row["answer"]))
    for split in ("validation", "test", "heldout"):  # evaluation stays clean
        assert rows(loud, split) == rows(quiet, split)
    some = {i for i, r in enumerate(rows(load_course_dataset(**SMALL, noise=0.3), "train")) if r["noisy"]}
    more = {i for i, r in enumerate(rows(load_course_dataset(**SMALL, noise=0.6), "train")) if r["noisy"]}
    assert 0 < len(some) < len(more) < len(loud_rows) and some <= more  # nested noise levels


def test_evaluation_splits_do_not_depend_on_train_options():
    base = load_course_dataset(**SMALL)
    other = load_course_dataset(**dict(SMALL, n_train=150), templates_per_record=3, noise=0.5)
    for split in ("validation", "test", "heldout"):
        assert rows(base, split) == rows(other, split)
    small = {r["answer"] for r in base["train"]}
    assert small <= {r["answer"] for r in other["train"]}  # more data = the same records plus new ones


def test_score():
    refs = [format_answer(r) for r in make_records(4)]
    assert score(refs, refs) == {"exact_match": 1.0, "field_accuracy": 1.0, "valid_json": 1.0, "n": 4}

    wrong = json.loads(refs[0])
    wrong["city"] = "Nowhere"
    result = score([json.dumps(wrong)], refs[:1])
    assert result["exact_match"] == 0.0 and result["field_accuracy"] == 0.75 and result["valid_json"] == 1.0

    garbage = score(["no json here", "{broken", "", "[1, 2]"], refs)
    assert garbage == {"exact_match": 0.0, "field_accuracy": 0.0, "valid_json": 0.0, "n": 4}

    embedded = "Sure! Here it is:\n```json\n" + refs[1] + "\n```\nAnything else?"
    assert parse_answer(embedded) == json.loads(refs[1])
    assert score([embedded], refs[1:2])["exact_match"] == 1.0

    as_string = json.loads(refs[2])
    as_string["age"] = str(as_string["age"])  # "34" is not 34
    assert score([json.dumps(as_string)], refs[2:3])["field_accuracy"] == 0.75

    extra = dict(json.loads(refs[3]), email="x@y.z")  # all fields right but an extra key
    result = score([json.dumps(extra)], refs[3:4])
    assert result["exact_match"] == 0.0 and result["field_accuracy"] == 1.0


def test_parse_answer_edge_cases():
    assert parse_answer('{"a": 1} {"b": 2}') == {"a": 1}
    assert parse_answer('{bad} then {"a": 1}') == {"a": 1}
    assert parse_answer(None) is None
    assert parse_answer("") is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_train=0), "n_train"),
        (dict(n_validation=-1), "n_validation"),
        (dict(n_test=2.5), "n_test"),
        (dict(n_heldout=0), "n_heldout"),
        (dict(noise=1.5), "[0, 1]"),
        (dict(noise=-0.1), "[0, 1]"),
        (dict(templates_per_record=0), f"1 to {len(TRAIN_TEMPLATES)}"),
        (dict(templates_per_record=len(TRAIN_TEMPLATES) + 1), f"1 to {len(TRAIN_TEMPLATES)}"),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        load_course_dataset(**kwargs)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="one each"):
        score(["a"], [])
    with pytest.raises(ValueError, match="strength"):
        augment("x", {"name": "A B", "age": 1, "city": "C", "job": "d"}, seed=0, strength=2)
    with pytest.raises(ValueError, match="n must be"):
        make_records(-1)


def test_profile_dataset_has_the_profile_sizes():
    from ftkit.core.profiles import get_profile

    profile = get_profile("ci")
    data = profile_dataset(profile)
    assert len(data["train"]) == profile.n_train
    assert [len(data[s]) for s in ("validation", "test", "heldout")] == [profile.n_eval] * 3
    assert data["train"][0] == load_course_dataset(n_train=profile.n_train, n_validation=profile.n_eval,
                                                   n_test=profile.n_eval, n_heldout=profile.n_eval)["train"][0]


def test_cover_templates_deals_every_phrasing_and_label_noise_is_known():
    """cover_templates: 8 records use the 8 training phrasings once each (4 phrasings a record: each 4 times); the
    validation and test rows are the same whatever the training set (chapter 3's rows compare on them), and without it
    every split draws what it always did. label_noise: a quarter of 8 records get one wrong field, a
    value their sentence does not contain; clean_answer keeps the truth, and the other splits are clean."""
    plain = load_course_dataset(n_train=8, n_validation=8, n_test=8, n_heldout=8)
    dealt = load_course_dataset(n_train=8, n_validation=8, n_test=8, n_heldout=8, cover_templates=True,
                                label_noise=0.25)
    assert sorted(dealt["train"]["template"]) == list(range(len(TRAIN_TEMPLATES)))
    four = load_course_dataset(n_train=8, n_validation=8, n_test=8, n_heldout=8, cover_templates=True,
                               templates_per_record=4)
    assert sorted(four["train"]["template"]) == sorted(list(range(len(TRAIN_TEMPLATES))) * 4)
    more = load_course_dataset(n_train=32, n_validation=8, n_test=8, n_heldout=8, cover_templates=True, noise=0.5)
    for other in (four, more):
        assert all(dealt[split][:] == other[split][:] for split in ("validation", "test", "heldout"))
    assert dealt["validation"]["answer"] == plain["validation"]["answer"]  # the same people, dealt other phrasings
    wrong = [r for r in dealt["train"] if r["corrupted"]]
    assert len(wrong) == 2 and not any(dealt[split]["corrupted"].count(True) for split in ("validation", "test"))
    for r in wrong:
        said, truth = json.loads(r["answer"]), json.loads(r["clean_answer"])
        (field,) = [k for k in truth if said[k] != truth[k]]
        assert field in ("city", "job") and said[field] not in r["messages"][0]["content"]
        assert r["messages"][1]["content"] == r["answer"]
    with pytest.raises(ValueError, match="label_noise"):
        load_course_dataset(label_noise=1.5)
