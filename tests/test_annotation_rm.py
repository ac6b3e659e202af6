"""An export of the reviewers' tool trains the reward model (`rlhf rm`) on a tiny model."""

from __future__ import annotations

import json

import pytest

from annotation.export import export
from annotation.store import AnnotationStore
from annotation.tasks import Task

try:
    from reward_model.trainer import train as train_reward_model
except ImportError:  # the stage is written in parallel; without it there is nothing to train
    train_reward_model = None

GOOD = "Hi! {topic} are nice. Hope this helps."
PLAIN = "{topic} are nice."
BAD = "Bye!"
TOPICS = ["Cats", "Waves", "Volcanoes", "Seas", "Naps", "Lavas", "Sands", "Ashes", "Days", "Hellos", "Salts", "Purrs"]


def _annotated_store(tmp_path) -> AnnotationStore:
    """12 tasks, two reviewers each: both rank good > plain > bad; one flags a task all-bad."""
    store = AnnotationStore(tmp_path / "rm.db")
    store.import_tasks(
        [
            Task(
                id=f"t{i}",
                prompt=f"User: Tell me about {topic.lower()}.\nAssistant:",
                responses=[
                    {"id": "bad", "text": BAD},
                    {"id": "good", "text": GOOD.format(topic=topic)},
                    {"id": "plain", "text": PLAIN.format(topic=topic)},
                ],
            )
            for i, topic in enumerate(TOPICS)
        ]
    )
    store.set_overlap(2)
    for name in ("ann", "ben"):
        reviewer = store.add_reviewer(name)[0]
        while (offer := store.next_task(reviewer.id)) is not None:
            label_of = {response_id: "ABC"[index] for index, response_id in enumerate(offer.shown_order)}
            all_bad = name == "ben" and offer.task.id == "t0"
            store.submit_ranking(
                reviewer.id,
                offer.task.id,
                [[label_of["good"]], [label_of["plain"]], [label_of["bad"]]],
                all_bad=all_bad,
            )
    return store


@pytest.mark.slow
@pytest.mark.skipif(train_reward_model is None, reason="reward model stage not available yet")
def test_a_rankings_export_trains_the_reward_model(tmp_path, tiny_model_dir):
    from rlhf.app.schema import load_config

    store = _annotated_store(tmp_path)
    rankings_file = tmp_path / "rankings.jsonl"
    assert export(store, "rankings", rankings_file) == 24
    rows = [json.loads(line) for line in rankings_file.read_text().splitlines()]
    assert sum(row["all_bad"] for row in rows) == 1
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={rankings_file}",
            f"run.output_dir={tmp_path / 'rm'}",
            "data.eval_fraction=0.25",
            "data.max_length=64",
            "train.max_steps=20",
            "train.learning_rate=3e-3",
            "train.per_device_train_batch_size=8",
            "train.logging_steps=1",
            "rm.normalize_samples=8",
            "tracking.wandb_mode=disabled",
            "tracking.plots=false",
        ],
    )
    summary = train_reward_model(cfg)
    # 12 tasks x 3 pairs each (both reviewers agree), split by task into training and held-out groups
    assert summary["train/num_groups"] == 9 and summary["train/num_pairs"] == 27
    assert (tmp_path / "rm" / "model" / "config.json").exists()
    logged = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logged if "loss" in row]
    assert len(losses) >= 10 and losses[-1] < losses[0]  # the reward model learned the reviewers' preference
    assert summary["eval/accuracy"] > 0.5  # ... and it carries over to the held-out tasks
    store.close()


def _mixed_store(tmp_path) -> AnnotationStore:
    """Reviewers, gold items, a blocked and a warned reviewer, an adjudicated task and app feedback.

    - cal ranks t0-t2 backwards, then answers both gold items wrongly: blocked (min 2 gold answers);
    - dee answers gold g0 wrongly (accuracy 0, warned: one answer cannot block), then ranks t0, t1 backwards;
    - ann answers both gold items right and ranks everything good > plain > bad;
    - ben ranks like ann except t11, which he reverses; an adjudicator decides t11 as good > plain > bad;
    - the app "shop" sends 4 choices (good over bad) and thumbs (good up, bad down) on one more prompt.
    """
    from annotation.adjudication import decide
    from annotation.feedback import add_app, add_feedback

    store = AnnotationStore(tmp_path / "mixed.db")

    def responses(topic):
        return [
            {"id": "bad", "text": BAD},
            {"id": "good", "text": GOOD.format(topic=topic)},
            {"id": "plain", "text": PLAIN.format(topic=topic)},
        ]

    def prompt(topic):
        return f"User: Tell me about {topic.lower()}.\nAssistant:"

    store.import_tasks(
        [Task(id=f"t{i}", prompt=prompt(topic), responses=responses(topic)) for i, topic in enumerate(TOPICS)]
    )
    store.import_tasks(
        [
            Task(id=f"g{i}", prompt=prompt(topic), responses=responses(topic), gold=[["good"], ["plain"], ["bad"]])
            for i, topic in enumerate(["Owls", "Rains"])
        ]
    )
    store.set_overlap(2)
    store.set_quality_rules(warn_below=0.7, block_below=0.5, min_answers=2)
    right, backwards = [["good"], ["plain"], ["bad"]], [["bad"], ["plain"], ["good"]]

    def work(name: str, gold_rate: float, answers: int, ranking_of) -> None:
        store.set_gold_rate(gold_rate)
        reviewer = store.add_reviewer(name)[0]
        for _ in range(answers):
            offer = store.next_task(reviewer.id)
            if offer is None:
                return
            label_of = {response_id: "ABC"[index] for index, response_id in enumerate(offer.shown_order)}
            store.submit_ranking(
                reviewer.id, offer.task.id, [[label_of[r] for r in tier] for tier in ranking_of(offer.task.id)]
            )

    work("cal", 0.0, 3, lambda task_id: backwards)
    work("cal", 1.0, 2, lambda task_id: backwards)
    work("dee", 1.0, 1, lambda task_id: backwards)
    work("dee", 0.0, 2, lambda task_id: backwards)
    work("ann", 1.0, 2, lambda task_id: right)
    work("ann", 0.0, 99, lambda task_id: right)
    work("ben", 0.0, 99, lambda task_id: backwards if task_id == "t11" else right)
    decide(store, "t11", "ranking", right, adjudicator="lead")
    shop, _ = add_app(store, "shop", rate_per_minute=100)
    for topic in ["Owls", "Hills", "Rivers", "Clouds"]:
        add_feedback(
            store,
            shop,
            {
                "prompt": prompt(topic),
                "responses": [{"id": "a", "text": BAD}, {"id": "b", "text": GOOD.format(topic=topic)}],
                "choice": "b",
                "thumb": None,
                "client_id": None,
                "user_ref": None,
                "meta": {},
            },
        )
    for text, thumb in ((GOOD.format(topic="Stars"), "up"), (BAD, "down")):
        add_feedback(
            store,
            shop,
            {
                "prompt": prompt("Stars"),
                "responses": [{"id": "x", "text": text}],
                "choice": None,
                "thumb": thumb,
                "client_id": None,
                "user_ref": None,
                "meta": {},
            },
        )
    return store


def test_a_mixed_export_is_filtered_and_weighted_by_rlhf_rm(tmp_path):
    from reward_model.preference_data import load_preference_pairs

    store = _mixed_store(tmp_path)
    assert store.quality(store.reviewers()[0].id).status == "blocked"
    rankings_file = tmp_path / "rankings.jsonl"
    assert export(store, "rankings", rankings_file) == 30
    rows = [json.loads(line) for line in rankings_file.read_text().splitlines()]
    by_source = {
        source: [row for row in rows if row["source"] == source]
        for source in ("reviewer", "adjudicated", "gold", "app")
    }
    # dee t0, t1; ann t0-t10; ben t2-t10 (cal is blocked; t11's two rankings are replaced by the decision)
    assert sorted((row["annotator"], row["id"]) for row in by_source["reviewer"]) == sorted(
        [("dee", "t0"), ("dee", "t1")]
        + [("ann", f"t{i}") for i in range(11)]
        + [("ben", f"t{i}") for i in range(2, 11)]
    )
    assert [(row["id"], row["overrides"]) for row in by_source["adjudicated"]] == [("t11", ["ann", "ben"])]
    assert [row["id"] for row in by_source["gold"]] == ["g0", "g1"] and len(by_source["app"]) == 5
    dee = next(row for row in rows if row["annotator"] == "dee")
    assert (dee["gold_accuracy"], dee["quality_weight"]) == (0.0, pytest.approx(2 / 3, abs=1e-6))
    # plain majority: t0 and t1 are 1-1 between dee and ann, so their 3 pairs each are disputed
    # 12 tasks x 3 + 2 gold x 3 + 4 choices + 1 thumbs pair = 47 pairs; without t0, t1: 41
    assert len(load_preference_pairs(str(rankings_file))) == 41
    # weighted: ann (weight 1) outvotes dee (2/3): share 1 / (5/3) = 0.6 > 0.5, ann's direction wins
    weighted = load_preference_pairs(str(rankings_file), weight_by_quality=True)
    assert len(weighted) == 47
    t0 = {(pair["chosen"], pair["rejected"]) for pair in weighted if pair["group"] == "t0"}
    assert (GOOD.format(topic="Cats"), BAD) in t0
    # or drop rankings of annotators under 50% on gold: dee's go, ann's stand alone
    assert len(load_preference_pairs(str(rankings_file), min_gold_accuracy=0.5)) == 47
    store.close()


@pytest.mark.slow
@pytest.mark.skipif(train_reward_model is None, reason="reward model stage not available yet")
def test_a_mixed_export_trains_the_reward_model(tmp_path, tiny_model_dir):
    """Reviewers, gold items, an adjudicated task and app feedback in one rankings file train `rlhf rm`."""
    from reward_model.preference_data import load_preference_pairs, split_by_group
    from rlhf.app.schema import load_config

    store = _mixed_store(tmp_path)
    rankings_file = tmp_path / "rankings.jsonl"
    export(store, "rankings", rankings_file)
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={rankings_file}",
            f"run.output_dir={tmp_path / 'rm'}",
            "data.eval_fraction=0.25",
            "data.max_length=64",
            "train.max_steps=20",
            "train.learning_rate=3e-3",
            "train.per_device_train_batch_size=8",
            "train.logging_steps=1",
            "rm.normalize_samples=8",
            "rm.min_gold_accuracy=0.5",
            "rm.weight_by_quality=true",
            "tracking.wandb_mode=disabled",
            "tracking.plots=false",
        ],
    )
    pairs = load_preference_pairs(str(rankings_file), min_gold_accuracy=0.5, weight_by_quality=True)
    expected_train, _ = split_by_group(pairs, 0.25, cfg.run.seed)
    summary = train_reward_model(cfg)
    # 19 groups (12 tasks, 2 gold items, 4 choices, 1 thumbs prompt); round(19 * 0.25) = 5 held out
    assert summary["train/num_groups"] == 14 and summary["train/num_pairs"] == len(expected_train)
    logged = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logged if "loss" in row]
    assert len(losses) >= 10 and losses[-1] < losses[0]
    assert summary["eval/accuracy"] > 0.5
    store.close()
