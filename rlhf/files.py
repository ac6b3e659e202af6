"""Atomic file output and JSONL reading.

Every output the pipeline writes goes through a temporary name in the same directory and an
`os.replace`, so a crash or a bad row never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode open() would
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically; returns the number of rows written."""
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    return count


def decode_line(raw: bytes, path: str | os.PathLike, row_number: int) -> str:
    """A line's bytes as text; bytes that are not UTF-8 raise DataError naming the file, row and column."""
    from rlhf.errors import DataError

    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: row {row_number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            "save the file as UTF-8"
        ) from None


def read_jsonl_numbered(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(1-based line number, row) for every non-blank line; a malformed line (bad JSON, not UTF-8, not an
    object) raises DataError naming the file and the row (line numbers, so an error points at the line a
    person opens)."""
    from rlhf.errors import DataError

    rows: list[tuple[int, dict]] = []
    with open(path, "rb") as handle:  # bytes: a bad byte is reported with its row, not a file offset
        for row_number, raw in enumerate(handle, start=1):
            line = decode_line(raw, path, row_number)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: row {row_number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {row_number}: expected a JSON object, got {type(row).__name__}")
            rows.append((row_number, row))
    return rows


def read_text_checked(path: str | os.PathLike) -> str:
    """A whole text file as UTF-8; a bad byte raises DataError naming the file and its line (row)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line_end = raw.find(b"\n", exc.start)
        line = raw[line_start : len(raw) if line_end < 0 else line_end]
        decode_line(line, path, raw.count(b"\n", 0, exc.start) + 1)  # raises DataError with the row
        raise


def read_json_checked(path: str | os.PathLike) -> Any:
    """A JSON file; bad UTF-8 or bad JSON raises DataError naming the file and the line."""
    from rlhf.errors import DataError

    try:
        return json.loads(read_text_checked(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: row {exc.lineno}: not valid JSON ({exc.msg})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a malformed line raises DataError naming the file and the 1-based row."""
    return [row for _, row in read_jsonl_numbered(path)]


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; it replaces `path` only if the block succeeds.

    Model directories are written this way so a crash mid-save never leaves a directory that looks
    complete (the pipeline skips stages whose output exists).
    """
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
