"""Config system: inheritance, overrides, errors that name key + source + suggestion, round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhf import config as core
from rlhf.app.schema import load_config
from rlhf.config import require, save_config
from rlhf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def stage_file(tmp_path):
    write(
        tmp_path / "base.yaml",
        "model:\n  name_or_path: base-model\ntrain:\n  learning_rate: 1.0e-4\n  per_device_train_batch_size: 4\n",
    )
    return write(tmp_path / "stage.yaml", "base: base.yaml\ntrain:\n  learning_rate: 3.0e-4\nppo:\n  kl_coef: 0.1\n")


def test_inheritance_and_overrides(stage_file):
    cfg = load_config(stage_file, ["ppo.kl_coef=0.02", "train.max_steps=7", "--tracking.report_to=[jsonl,wandb]"])
    assert cfg.model.name_or_path == "base-model"  # from the base file
    assert cfg.train.per_device_train_batch_size == 4  # from the base file, untouched by the stage file
    assert cfg.train.learning_rate == pytest.approx(3e-4)  # the stage file wins over its base
    assert cfg.ppo.kl_coef == pytest.approx(0.02)  # the override wins over the file
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)  # coerced to the schema's type
    assert list(cfg.tracking.report_to) == ["jsonl", "wandb"]  # wandb-agent style --key=value
    assert cfg.train.gradient_accumulation_steps == 1  # schema default


def test_unknown_key_in_file_names_key_source_and_suggestion(tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  name_or_path: m\ntrain:\n  learnin_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    message = str(err.value)
    assert "train.learnin_rate" in message and str(bad) in message and "did you mean train.learning_rate?" in message


def test_unknown_key_in_override_names_override(stage_file):
    with pytest.raises(ConfigError) as err:
        load_config(stage_file, ["ppo.kl_coeff=0.1"])
    assert "ppo.kl_coeff" in str(err.value) and "override 'ppo.kl_coeff=0.1'" in str(err.value)
    assert "did you mean ppo.kl_coef?" in str(err.value)


def test_right_leaf_under_wrong_section_suggests_the_section(stage_file):
    with pytest.raises(ConfigError, match=r"did you mean train\.max_grad_norm\?"):
        load_config(stage_file, ["ppo.max_grad_norm=1.0"])


def test_wrong_type_names_key_value_and_type(stage_file):
    with pytest.raises(ConfigError) as err:
        load_config(stage_file, ["train.learning_rate=fast"])
    message = str(err.value)
    assert "train.learning_rate" in message and "'fast'" in message and "Float" in message


def test_bad_choice_lists_choices(stage_file):
    with pytest.raises(ConfigError, match=r"ppo.kl_estimator.*k1, k2, k3"):
        load_config(stage_file, ["ppo.kl_estimator=k9"])


def test_missing_required_value_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing required config value 'model.name_or_path'"):
        load_config(write(tmp_path / "empty.yaml", "train:\n  max_steps: 3\n"))
    cfg = load_config(None, ["model.name_or_path=m"])
    with pytest.raises(ConfigError, match="'ppo.reward_model_path'"):
        require(cfg, "ppo.reward_model_path")


def test_inheritance_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_resolved_config_round_trips(stage_file, tmp_path):
    cfg = load_config(stage_file, ["ppo.kl_coef=0.02", "run.seed=7"])
    saved = save_config(cfg, tmp_path / "run")
    again = load_config(saved)  # a run can be repeated from its config.yaml alone
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in p.parts and "sweeps" not in p.parts),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_shipped_config_validates(path):
    if path.name == "pipeline.yaml":  # a pipeline file has its own schema (and validates its stage files)
        from rlhf.app.pipeline import PipelineConfig

        cfg = core.load_config(path, schema_cls=PipelineConfig)
        for stage in ("sft", "rm", "ppo"):
            assert (REPO / cfg.pipeline[f"{stage}_config"]).exists()
    else:
        cfg = load_config(path, require_complete=False)
    assert cfg.run.seed is not None


def test_cli_exits_2_with_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlhf", "config", "show", "train.learnin_rate=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "did you mean train.learning_rate?" in result.stderr and "Traceback" not in result.stderr
