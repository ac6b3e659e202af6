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
    store.import_tasks([
        Task(id=f"t{i}", prompt=f"User: Tell me about {topic.lower()}.\nAssistant:",
             responses=[{"id": "bad", "text": BAD}, {"id": "good", "text": GOOD.format(topic=topic)}, {"id": "plain", "text": PLAIN.format(topic=topic)}])
        for i, topic in enumerate(TOPICS)
    ])
    store.set_overlap(2)
    for name in ("ann", "ben"):
        reviewer = store.add_reviewer(name)[0]
        while (offer := store.next_task(reviewer.id)) is not None:
            label_of = {response_id: "ABC"[index] for index, response_id in enumerate(offer.shown_order)}
            all_bad = name == "ben" and offer.task.id == "t0"
            store.submit_ranking(reviewer.id, offer.task.id, [[label_of["good"]], [label_of["plain"]], [label_of["bad"]]], all_bad=all_bad)
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
    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"data.train_file={rankings_file}", f"run.output_dir={tmp_path / 'rm'}",
        "data.eval_fraction=0.25", "data.max_length=64", "train.max_steps=20", "train.learning_rate=3e-3",
        "train.per_device_train_batch_size=8", "train.logging_steps=1", "rm.normalize_samples=8",
        "tracking.wandb_mode=disabled", "tracking.plots=false",
    ])
    summary = train_reward_model(cfg)
    # 12 tasks x 3 pairs each (both reviewers agree), split by task into training and held-out groups
    assert summary["train/num_groups"] == 9 and summary["train/num_pairs"] == 27
    assert (tmp_path / "rm" / "model" / "config.json").exists()
    logged = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logged if "loss" in row]
    assert len(losses) >= 10 and losses[-1] < losses[0]  # the reward model learned the reviewers' preference
    assert summary["eval/accuracy"] > 0.5  # ... and it carries over to the held-out tasks
    store.close()
