"""Converters for public preference datasets, each on a small sample written in that dataset's layout."""

from __future__ import annotations

import json
import math

import pytest

from rlhf.commands.converters import convert_rows
from rlhf.errors import DataError


def numbered(rows):
    return list(enumerate(rows, start=1))


# ----------------------------------------------------------------------------- Anthropic HH-RLHF
HH = [
    {
        "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
        "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: Five, obviously.",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Name a fruit.\n\nAssistant: An apple.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Name a fruit.\n\nAssistant: No.",
    },
    {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"},  # prompts differ
]


def test_hh_transcripts_become_conversational_pairs():
    out, report = convert_rows("hh", numbered(HH), source="hh.jsonl")
    assert out[0] == {
        "prompt": [{"role": "user", "content": "What is 2+2?"}],
        "chosen": [{"role": "assistant", "content": "4."}],
        "rejected": [{"role": "assistant", "content": "Five, obviously."}],
    }
    assert [m["role"] for m in out[1]["prompt"]] == ["user", "assistant", "user"]
    assert out[1]["prompt"][2]["content"] == "Name a fruit." and out[1]["chosen"][0]["content"] == "An apple."
    assert (report.total, report.kept) == (3, 2)
    assert "row 3: field 'rejected': chosen and rejected transcripts differ" in report.examples[0]


def test_hh_strict_stops_at_the_bad_row():
    with pytest.raises(DataError, match=r"hh\.jsonl: row 3: field 'rejected'"):
        convert_rows("hh", numbered(HH), source="hh.jsonl", strict=True)


# ----------------------------------------------------------------------------- OpenAssistant
def oasst_message(message_id, parent_id, role, text, rank=None):
    return {
        "message_id": message_id,
        "parent_id": parent_id,
        "role": role,
        "text": text,
        "rank": rank,
        "lang": "en",
        "message_tree_id": "t1",
    }


OASST_FLAT = [
    oasst_message("p1", None, "prompter", "How do plants eat?"),
    oasst_message("a1", "p1", "assistant", "They do not.", rank=1),
    oasst_message("a2", "p1", "assistant", "Photosynthesis.", rank=0),
    oasst_message("a3", "p1", "assistant", "Unranked reply."),
    oasst_message("p2", "a2", "prompter", "Explain more."),
    oasst_message("b1", "p2", "assistant", "Light to sugar.", rank=0),
    oasst_message("b2", "p2", "assistant", "Chlorophyll captures light.", rank=0),
    oasst_message("b3", "p2", "assistant", "Magic.", rank=1),
    oasst_message("p3", "b3", "prompter", "Really?"),
    oasst_message("c1", "p3", "assistant", "Only one reply: nothing to rank.", rank=0),
]


def test_oasst_sibling_ranks_become_rankings():
    out, report = convert_rows("oasst", numbered(OASST_FLAT))
    by_id = {row["id"]: row for row in out}
    assert sorted(by_id) == ["p1", "p2"]  # p3 has a single reply
    assert by_id["p1"]["ranking"] == [["a2"], ["a1"]]  # rank 0 first; the unranked a3 is left out
    assert [r["id"] for r in by_id["p1"]["responses"]] == ["a1", "a2"]
    assert by_id["p1"]["prompt"] == [{"role": "user", "content": "How do plants eat?"}]
    assert by_id["p2"]["ranking"] == [["b1", "b2"], ["b3"]]  # equal ranks tie
    assert by_id["p2"]["prompt"] == [
        {"role": "user", "content": "How do plants eat?"},
        {"role": "assistant", "content": "Photosynthesis."},
        {"role": "user", "content": "Explain more."},
    ]
    assert report.skipped == 0


def test_oasst_nested_trees_give_the_same_rankings():
    def node(message_id):
        message = next(m for m in OASST_FLAT if m["message_id"] == message_id)
        replies = [node(m["message_id"]) for m in OASST_FLAT if m["parent_id"] == message_id]
        return {k: v for k, v in message.items() if k not in ("parent_id", "message_tree_id")} | {"replies": replies}

    tree = {"message_tree_id": "t1", "prompt": node("p1")}
    nested, _ = convert_rows("oasst", numbered([tree]))
    flat, _ = convert_rows("oasst", numbered(OASST_FLAT))
    assert nested == flat


# ----------------------------------------------------------------------------- UltraFeedback
UF = [
    {
        "source": "evol",
        "instruction": "Write a haiku.",
        "completions": [
            {
                "model": "m-a",
                "response": "A",
                "overall_score": 8.0,
                "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "5"}},
            },
            {
                "model": "m-b",
                "response": "B",
                "overall_score": 6.5,
                "annotations": {"helpfulness": {"Rating": "5"}, "honesty": {"Rating": "5"}},
            },
            {
                "model": "m-c",
                "response": "C",
                "overall_score": 8.0,
                "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "N/A"}},
            },
            {
                "model": "m-d",
                "response": "D",
                "overall_score": 3.0,
                "annotations": {"helpfulness": {"Rating": "1"}, "honesty": {"Rating": "2"}},
            },
        ],
    },
    {
        "instruction": "Same scores.",
        "completions": [
            {"model": "x", "response": "1", "overall_score": 5},
            {"model": "y", "response": "2", "overall_score": 5},
        ],
    },
]


def test_ultrafeedback_scores_become_tiered_rankings():
    out, report = convert_rows("ultrafeedback", numbered(UF), source="uf.jsonl")
    assert len(out) == 1
    row = out[0]
    assert row["prompt"] == [{"role": "user", "content": "Write a haiku."}]
    assert row["ranking"] == [["m-a", "m-c"], ["m-b"], ["m-d"]]  # 8 = 8 > 6.5 > 3
    assert row["id"] == "uf-1"
    assert report.reasons == {"completions[].overall_score: all completions have the same score": 1}


def test_ultrafeedback_mean_rating():
    out, _ = convert_rows("ultrafeedback", numbered(UF[:1]), score_field="mean_rating")
    # mean ratings: m-a 4.5, m-b 5.0, m-c 2.0 (N/A left out), m-d 1.5
    assert out[0]["ranking"] == [["m-b"], ["m-a"], ["m-c"], ["m-d"]]


# ----------------------------------------------------------------------------- Stanford SHP
SHP = [
    {
        "post_id": "p1",
        "history": "Why is the sky blue?",
        "human_ref_A": "Rayleigh scattering.",
        "human_ref_B": "Paint.",
        "labels": 1,
        "score_A": 30,
        "score_B": 5,
        "score_ratio": 6.0,
    },
    {
        "post_id": "p1",
        "history": "Why is the sky blue?",
        "human_ref_A": "Because.",
        "human_ref_B": "Scattering of sunlight.",
        "labels": 0,
        "score_A": 4,
        "score_B": 6,
        "score_ratio": 1.5,
    },
]


def test_shp_labels_pick_the_chosen_answer_and_group_by_post():
    out, _ = convert_rows("shp", numbered(SHP))
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in out] == [
        ("Rayleigh scattering.", "Paint."),
        ("Scattering of sunlight.", "Because."),
    ]
    assert {p["group"] for p in out} == {"p1"} and "margin" not in out[0]


def test_shp_score_ratio_filter_and_log_margin():
    out, report = convert_rows("shp", numbered(SHP), min_score_ratio=2.0, log_ratio_margin=True)
    assert len(out) == 1 and report.skipped == 0
    assert out[0]["margin"] == pytest.approx(math.log(6.0))


def test_convert_cli_writes_output_and_summary(tmp_path, capsys):
    from rlhf.app.cli import main

    source = tmp_path / "hh.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in HH))
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", "--from", "hh", str(source), str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows_in"], summary["rows_out"], summary["skipped"]) == (3, 2, 1)
    from rlhf.data import load_pairs

    assert len(load_pairs(out)) == 2
    assert main(["data", "convert", "--from", "hh", "--strict", str(source), str(tmp_path / "strict.jsonl")]) == 2
    assert "row 3" in capsys.readouterr().err and not (tmp_path / "strict.jsonl").exists()
