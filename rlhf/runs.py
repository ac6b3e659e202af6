"""What a run is, and how a run directory changes hands: fingerprints, resume checks, history moved aside.

A checkpoint records the run's fingerprint (`FINGERPRINT_FILE`): the config keys that shape training and a
digest of every input (data files and model directories). Resuming from a checkpoint whose fingerprint
differs is refused with the keys that differ; `run.resume_mismatch_ok=true` accepts it on purpose.

Digests. A data file is hashed whole (sha256 of its bytes): data files are small next to the training
they feed, and a one-row edit must show. A model directory is fingerprinted by each file's name, size
and sha256 of its first and last MiB ("size+head+tail"): weights are large, a retrained model differs in
its first tensor bytes, and copying a directory (new mtimes) keeps the fingerprint. A name that is not a
local path (a hub id) is recorded as the name and revision.

A run directory changes only after config, data and models are validated (`begin_run`): a fresh run
moves an earlier run's history (metrics, samples, checkpoints, summary, config) into
`previous/<time>/` instead of appending to it, and a resumed run drops the rows logged after its
checkpoint, so metrics.jsonl holds each step once. `summary.json`, the completion marker, is written last
by the stage and removed only when a run actually starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from rlhf.errors import ConfigError

FINGERPRINT_FILE = "run_fingerprint.json"
PREVIOUS_DIR = "previous"
HISTORY = ("metrics.jsonl", "samples.jsonl", "summary.json", "checkpoints", "plots", "config.yaml", "tensorboard")
# Keys that name inputs: their content is fingerprinted, not their spelling (a moved file is the same run).
INPUT_KEYS = (
    "model.name_or_path",
    "model.tokenizer",
    "data.train_file",
    "data.eval_file",
    "ppo.reward_model_path",
    "ppo.ref_model_path",
    "ppo.value_model_path",
    "ppo.ptx_file",
    "rm.normalize_data_file",
)
# Keys that do not change what is trained: bookkeeping, logging, evaluation, where and how long one job runs.
IGNORED_PREFIXES = ("tracking.", "run.name", "run.output_dir", "run.resume_mismatch_ok")
IGNORED_KEYS = {
    "train.logging_steps",
    "train.save_steps",
    "train.save_total_limit",
    "train.resume_from_checkpoint",
    "train.dataloader_num_workers",
    "train.eval_steps",
    "train.per_device_eval_batch_size",
    "ppo.resume",
    "ppo.updates_per_job",
    "ppo.stop_at_kl",
    "ppo.max_minutes",
    "ppo.save_every",
    "ppo.eval_every",
    "ppo.eval_num_prompts",
    "ppo.sample_every",
    "ppo.gold_judge",
}
MIB = 1 << 20


# --------------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------------


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def directory_digest(path: Path) -> str:
    """size+head+tail of every file under a model directory (hidden files and checkpoints left out)."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if not file.is_file() or any(part.startswith(".") or part == "checkpoints" for part in relative.parts):
            continue
        size = file.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(MIB))
            if size > 2 * MIB:
                handle.seek(-MIB, os.SEEK_END)
                digest.update(handle.read(MIB))
    return "size+head+tail:" + digest.hexdigest()


def input_digest(value: Optional[str], revision: Optional[str] = None) -> Optional[str]:
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        return directory_digest(path)
    return f"name:{value}@{revision or 'default'}"


def run_fingerprint(cfg: Any) -> dict[str, Any]:
    """{"config": {key: value}, "inputs": {key: digest}} of the keys that shape training."""
    from rlhf.config import as_dict

    flat = _flatten(as_dict(cfg))
    config = {
        key: value
        for key, value in sorted(flat.items())
        if key not in INPUT_KEYS and key not in IGNORED_KEYS and not key.startswith(IGNORED_PREFIXES)
    }
    revision = flat.get("model.revision")
    inputs = {key: input_digest(flat.get(key), revision) for key in INPUT_KEYS if flat.get(key)}
    return {"config": json.loads(json.dumps(config, default=str)), "inputs": inputs}


def fingerprint_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every config key and input that differs."""
    lines = []
    for section, label in (("config", "{key}: {old!r} -> {new!r}"), ("inputs", "{key} (file content changed)")):
        old_section, new_section = stored.get(section, {}), current.get(section, {})
        for key in sorted(set(old_section) | set(new_section)):
            if old_section.get(key) != new_section.get(key):
                lines.append(label.format(key=key, old=old_section.get(key), new=new_section.get(key)))
    return lines


def write_fingerprint(directory: str | os.PathLike, fingerprint: dict[str, Any], **extra: Any) -> None:
    from rlhf.files import write_json_atomic

    write_json_atomic(Path(directory) / FINGERPRINT_FILE, {**fingerprint, **extra})


def read_fingerprint(directory: str | os.PathLike) -> Optional[dict[str, Any]]:
    path = Path(directory) / FINGERPRINT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_resume(checkpoint: str | os.PathLike, current: dict[str, Any], mismatch_ok: bool, stage: str) -> None:
    """Refuse a checkpoint of another run (naming the keys that differ) unless mismatch_ok."""
    stored = read_fingerprint(checkpoint)
    if stored is None:
        differences = ["the checkpoint records no fingerprint (written by an older version, or cut off)"]
    else:
        differences = fingerprint_differences(stored, current)
    if not differences:
        return
    if mismatch_ok:
        print(
            f"{stage}: resuming from {checkpoint} of another run (run.resume_mismatch_ok=true): "
            + "; ".join(differences)
        )
        return
    raise ConfigError(
        f"{checkpoint} is a checkpoint of another run: " + "; ".join(differences) + ". Use another run.output_dir, "
        "start over (the earlier run is moved to previous/), or accept it with run.resume_mismatch_ok=true"
    )


# --------------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------------


def move_history_aside(run_dir: str | os.PathLike, names: Iterable[str] = HISTORY) -> Optional[Path]:
    """Move an earlier run's history into previous/<time>/; returns that folder (None when nothing moved)."""
    run_dir = Path(run_dir)
    present = [  # an empty folder (the Trainer makes checkpoints/ when it is built) is no history
        run_dir / name
        for name in names
        if (run_dir / name).is_file() or ((run_dir / name).is_dir() and any((run_dir / name).iterdir()))
    ]
    if not any(path.name != "config.yaml" for path in present):
        return None  # a bare config.yaml is no history
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = run_dir / PREVIOUS_DIR / stamp
    suffix = 1
    while target.exists():
        target = run_dir / PREVIOUS_DIR / f"{stamp}-{suffix}"
        suffix += 1
    target.mkdir(parents=True)
    for path in present:
        os.replace(path, target / path.name)
    return target


def read_log_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics/samples log; a line cut off by a crash (or any unreadable line) is left out."""
    rows = []
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    row = json.loads(raw.decode("utf-8"))
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        return []
    return rows


def keep_logged_rows_until(
    run_dir: str | os.PathLike, step: int, names: tuple[str, ...] = ("metrics.jsonl", "samples.jsonl")
) -> None:
    """Drop rows logged after `step` (a resumed run logs them again) and torn lines, atomically."""
    from rlhf.files import write_text_atomic

    for name in names:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        kept = [row for row in read_log_rows(path) if int(row.get("step", 0) or 0) <= step]
        write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept))


def begin_run(
    cfg: Any, run_dir: str | os.PathLike, resume_step: Optional[int], stage: str, keep_summary: bool = False
) -> Path:
    """Hand the run directory to this run (main process only): call after everything is validated.

    resume_step None: a fresh run; an earlier run's history is moved to previous/<time>/.
    Otherwise the run continues from the checkpoint at that step: rows logged after it are dropped.
    Either way the resolved config.yaml is written.
    """
    from rlhf.config import save_config

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_step is None:
        moved = move_history_aside(run_dir)
        if moved is not None:
            print(f"{stage}: a fresh run in {run_dir}; the earlier run's history is in {moved}")
    else:
        keep_logged_rows_until(run_dir, resume_step)
        if not keep_summary:
            (run_dir / "summary.json").unlink(missing_ok=True)  # the work after the checkpoint is redone
    save_config(cfg, run_dir)
    return run_dir
