"""Loaders for every format and source type, and validation messages that name file, row and field."""

from __future__ import annotations

import json

import pytest

from rlhf.data import (
    load_candidates,
    load_pairs,
    load_prompts,
    load_rankings,
    load_rows,
    load_sft,
    ranking_to_pairs,
    read_rows,
)
from rlhf.errors import DataError

GOOD = {
    "sft": {"prompt": "User: Tell me about cats.\nAssistant:", "completion": " Cats purr."},
    "prompts": {"prompt": "User: Tell me about cats.\nAssistant:", "meta": {"topic": "cats"}},
    "pairs": {"prompt": "User: hi\nAssistant:", "chosen": " Hello!", "rejected": " Go away."},
    "candidates": {
        "id": "c1",
        "prompt": "User: hi\nAssistant:",
        "responses": [{"id": "a", "text": " Hello!"}, {"id": "b", "text": " Go away."}],
    },
    "rankings": {
        "id": "c1",
        "prompt": "User: hi\nAssistant:",
        "annotator": "ann",
        "responses": [{"id": "a", "text": " Hello!"}, {"id": "b", "text": " Go away."}, {"id": "c", "text": " Hi."}],
        "ranking": [["a", "c"], ["b"]],
    },
}
LOADERS = {
    "sft": load_sft,
    "prompts": load_prompts,
    "pairs": load_pairs,
    "candidates": load_candidates,
    "rankings": load_rankings,
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def with_(base: dict, **changes) -> dict:
    row = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is DELETE:
            row.pop(key)
        else:
            row[key] = value
    return row


DELETE = object()


@pytest.mark.parametrize("kind", list(GOOD))
def test_every_source_type_gives_the_same_rows(kind, tmp_path):
    import datasets

    rows = [GOOD[kind], with_(GOOD[kind], **({"id": "c2"} if "id" in GOOD[kind] else {}))]
    jsonl = write_jsonl(tmp_path / "rows.jsonl", rows)
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps(rows))
    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))

    expected = LOADERS[kind](jsonl).to_list()
    assert len(expected) == 2 and expected[0]["prompt"] == GOOD[kind]["prompt"]
    for source in (as_json, parquet, saved):
        assert LOADERS[kind](source).to_list() == expected, source


def test_optional_fields_missing_on_some_rows_are_filled_with_none(tmp_path):
    rows = [GOOD["pairs"], with_(GOOD["pairs"], margin=1.5, group="g1")]
    dataset = load_pairs(write_jsonl(tmp_path / "pairs.jsonl", rows))
    assert dataset["margin"] == [None, 1.5]
    assert dataset["group"] == [None, "g1"]


def test_conversational_sft_and_pairs_load(tmp_path):
    sft = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}
    assert load_sft(write_jsonl(tmp_path / "sft.jsonl", [sft]))[0]["messages"][1]["content"] == "Hello!"
    pair = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Bye."}],
    }
    assert load_pairs(write_jsonl(tmp_path / "pairs.jsonl", [pair]))[0]["rejected"][0]["content"] == "Bye."


# (format, bad row, field named in the message, words of the problem)
BAD_ROWS = [
    ("sft", with_(GOOD["sft"], completion=DELETE), "completion", "missing field"),
    ("sft", with_(GOOD["sft"], completion=3), "completion", "expected a string, got int"),
    ("sft", with_(GOOD["sft"], prompt="   "), "prompt", "empty text"),
    (
        "sft",
        {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
        "messages[1].role",
        "last message must be from the assistant",
    ),
    ("sft", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "expected one of"),
    ("prompts", {"text": "hello"}, "prompt", "missing field"),
    ("prompts", with_(GOOD["prompts"], meta="cats"), "meta", "expected an object"),
    ("pairs", with_(GOOD["pairs"], chosen=DELETE), "chosen", "missing field"),
    ("pairs", with_(GOOD["pairs"], rejected=" Hello!"), "rejected", "identical to chosen"),
    ("pairs", with_(GOOD["pairs"], margin="big"), "margin", "expected a finite number"),
    (
        "candidates",
        with_(GOOD["candidates"], responses=[{"id": "a", "text": "x"}]),
        "responses",
        "at least two responses",
    ),
    (
        "candidates",
        with_(GOOD["candidates"], responses=[{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]),
        "responses[1].id",
        "duplicate response id",
    ),
    ("candidates", with_(GOOD["candidates"], id=DELETE), "id", "missing field"),
    (
        "candidates",
        with_(GOOD["candidates"], responses=[{"id": "a", "text": "x"}, {"id": "b", "text": 5}]),
        "responses[1].text",
        "expected a string",
    ),
    (
        "rankings",
        with_(GOOD["rankings"], ranking=[["a"], ["zz"], ["b", "c"]]),
        "ranking[1]",
        "unknown response id 'zz'",
    ),
    ("rankings", with_(GOOD["rankings"], ranking=[["a"], ["a", "b", "c"]]), "ranking[1]", "ranked twice"),
    ("rankings", with_(GOOD["rankings"], ranking=[["a", "b", "c"]]), "ranking", "single tie"),
    ("rankings", with_(GOOD["rankings"], ranking=[["a"], ["b"]]), "ranking", "c not ranked"),
    ("rankings", with_(GOOD["rankings"], ranking=DELETE), "ranking", "missing field"),
    ("rankings", with_(GOOD["rankings"], all_bad="yes"), "all_bad", "expected true or false"),
]


@pytest.mark.parametrize("kind,bad,field,problem", BAD_ROWS, ids=[f"{k}-{f}-{p[:18]}" for k, _, f, p in BAD_ROWS])
def test_validation_error_names_file_row_and_field(kind, bad, field, problem, tmp_path):
    good = GOOD[kind]
    if "id" in bad and bad.get("id") == good.get("id"):
        bad = with_(bad, id="other")  # keep the duplicate-id check out of these cases
    path = write_jsonl(tmp_path / f"{kind}.jsonl", [good, bad])
    with pytest.raises(DataError) as error:
        LOADERS[kind](path)
    message = str(error.value)
    assert message.startswith(f"{path}: row 2: field '{field}': ")
    assert problem in message


def test_row_numbers_are_line_numbers_across_blank_lines(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(GOOD["sft"]) + "\n\n" + json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(DataError, match=r"sft\.jsonl: row 3: field 'completion'"):
        load_sft(path)


def test_invalid_json_line_names_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD["sft"]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: row 2: not valid JSON"):
        load_sft(path)


def test_duplicate_row_ids_are_errors_but_other_annotators_are_not(tmp_path):
    dup = write_jsonl(tmp_path / "candidates.jsonl", [GOOD["candidates"], GOOD["candidates"]])
    with pytest.raises(DataError, match=r"row 2: field 'id': duplicate id 'c1' \(first seen on row 1\)"):
        load_candidates(dup)
    same_annotator = write_jsonl(tmp_path / "r1.jsonl", [GOOD["rankings"], GOOD["rankings"]])
    with pytest.raises(DataError, match="row 2: field 'id': duplicate id \\+ annotator"):
        load_rankings(same_annotator)
    two_reviewers = write_jsonl(tmp_path / "r2.jsonl", [GOOD["rankings"], with_(GOOD["rankings"], annotator="other")])
    assert len(load_rankings(two_reviewers)) == 2


def test_all_bad_single_tie_is_allowed(tmp_path):
    row = with_(GOOD["rankings"], ranking=[["a", "b", "c"]], all_bad=True)
    assert load_rankings(write_jsonl(tmp_path / "r.jsonl", [row]))[0]["all_bad"] is True


def test_flagged_tie_single_tier_is_allowed_and_gives_no_pairs(tmp_path):
    row = with_(GOOD["rankings"], ranking=[["a", "b", "c"]], tie=True)
    assert load_rankings(write_jsonl(tmp_path / "r.jsonl", [row]))[0]["tie"] is True
    assert ranking_to_pairs(row) == []


def test_mixed_text_and_conversational_rows_are_rejected(tmp_path):
    conversational = with_(GOOD["sft"], prompt=[{"role": "user", "content": "hi"}])
    path = write_jsonl(tmp_path / "sft.jsonl", [GOOD["sft"], conversational])
    with pytest.raises(DataError, match="row 2: field 'prompt': conversational row in a file whose row 1 is text"):
        load_sft(path)


def test_skip_bad_rows_returns_dataset_and_report(tmp_path):
    rows = [
        GOOD["pairs"],
        with_(GOOD["pairs"], chosen=DELETE),
        GOOD["pairs"],
        with_(GOOD["pairs"], rejected=" Hello!"),
        with_(GOOD["pairs"], chosen=DELETE),
    ]
    dataset, report = load_pairs(write_jsonl(tmp_path / "pairs.jsonl", rows), skip_bad_rows=True)
    assert len(dataset) == 2
    assert (report.total, report.kept, report.skipped) == (5, 2, 3)
    assert report.reasons == {"chosen: missing field": 2, "rejected: identical to chosen": 1}
    assert "row 2: field 'chosen'" in report.examples[0]
    assert "kept 2 of 5 rows, skipped 3" in report.summary()


def test_file_with_only_bad_rows_fails_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [with_(GOOD["pairs"], chosen=DELETE)])
    with pytest.raises(DataError, match="no valid rows"):
        load_pairs(path, skip_bad_rows=True)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_rows(tmp_path / "nope.jsonl")


def test_load_rows_returns_plain_dicts(tmp_path):
    rows, report = load_rows(write_jsonl(tmp_path / "p.jsonl", [GOOD["prompts"]]), "prompts")
    assert rows == [GOOD["prompts"]] and report.skipped == 0


def test_validate_cli_exit_codes(tmp_path, capsys):
    from rlhf.app.cli import main

    good = write_jsonl(tmp_path / "good.jsonl", [GOOD["rankings"]])
    assert main(["data", "validate", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "rankings"
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [GOOD["rankings"], with_(GOOD["rankings"], annotator="x", ranking=[["a", "b", "c"]])]
    )
    assert main(["data", "validate", str(bad)]) == 2
    assert f"{bad}: row 2: field 'ranking'" in capsys.readouterr().err
    assert main(["data", "validate", str(bad), "--skip-bad-rows"]) == 1
    assert json.loads(capsys.readouterr().out)["skipped"] == 1
