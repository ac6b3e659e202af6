"""benchmarks/rm_probe.py's controlled replies: each variant is what its name says under the gold judge."""

import importlib.util
import json
from pathlib import Path

from rlhf.plugins import load_judge

REPO = Path(__file__).resolve().parents[1]


def _probe():
    spec = importlib.util.spec_from_file_location("rm_probe", REPO / "benchmarks" / "rm_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _judged(task_name: str, count: int = 40) -> list[dict[str, tuple[float, dict]]]:
    """Per test prompt: variant -> (gold score, the judge's points per rule)."""
    probe, judge = _probe(), load_judge(task_name, "--judge")
    task = json.loads((REPO / "data" / task_name / "task.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (REPO / "data" / task_name / "prompts_test.jsonl").open(encoding="utf-8")]
    out = []
    for row in rows[:count]:
        variants = probe.VARIANTS[task_name](task, row["meta"])
        out.append(
            {
                name: (judge.scores([row["prompt"]], [text])[0], judge.breakdown(row["prompt"], text))
                for name, text in variants.items()
            }
        )
    return out


def test_tiny_variants_differ_by_the_rule_they_name():
    for judged in _judged("tiny"):
        rules = {name: parts for name, (_, parts) in judged.items()}
        gold = {name: score for name, (score, _) in judged.items()}
        assert rules["3 facts"]["on_topic_fact"] - rules["2 facts"]["on_topic_fact"] == 1.0
        assert rules["4 facts"]["on_topic_fact"] - rules["3 facts"]["on_topic_fact"] == 1.0
        assert rules["2 facts + a repeat"]["repetition"] == -1.0 and rules["2 facts"]["repetition"] == 0.0
        assert rules["2 facts + off-topic"]["off_topic_fact"] == -1.0
        assert rules["3 facts, no greeting"]["greeting_first"] == 0.0 < rules["3 facts"]["greeting_first"]
        assert rules["3 facts, no closing"]["closing_last"] == 0.0 < rules["3 facts"]["closing_last"]
        assert gold["4 facts"] >= gold["3 facts"] > gold["2 facts"] > gold["2 facts + a repeat"]  # words past 16 cost


def test_lists_variants_differ_by_the_rule_they_name():
    for judged in _judged("lists"):
        gold = {name: score for name, (score, _) in judged.items()}
        assert gold["exact count"] == max(gold.values())
        assert gold["exact count"] > gold["an item twice"] and gold["exact count"] > gold["no header"]
        if "the excluded item" in gold:
            assert gold["exact count"] - gold["the excluded item"] >= 2.0  # -2 for the item the prompt excluded


def test_ordered_alike_counts_pairs_the_judge_tells_apart():
    assert _probe().ordered_alike([3.0, 1.0, 2.0], [2.0, 0.0, 0.0]) == (2, 2)  # the tied gold pair is skipped
    assert _probe().ordered_alike([0.0, 1.0], [1.0, 0.0]) == (0, 1)
