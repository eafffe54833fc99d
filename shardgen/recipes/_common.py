"""Helpers shared by recipes: reading publisher tables, finding audio, reporting problems."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

from ..records import Problem, RecipeError

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff", ".au"}


def read_text(path: Path) -> str:
    """Text of a metadata file: BOM stripped, CRLF/CR normalised, missing final newline tolerated."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def read_csv(path: Path, delimiter: str = ",", required: Iterable[str] = ()) -> list[dict[str, str]]:
    """Rows of a headed CSV/TSV as dicts; a RecipeError naming the file when columns are missing."""
    reader = csv.DictReader(io.StringIO(read_text(path)), delimiter=delimiter)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    missing = [c for c in required if c not in fields]
    if missing:
        raise RecipeError(f"{path}: missing column(s) {missing}; found {fields}")
    reader.fieldnames = fields
    return [{k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()} for row in reader]


def audio_files(root: Path) -> list[Path]:
    """Audio files below ``root`` in path order (hidden files ignored)."""
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in AUDIO_EXTS and p.is_file() and not p.name.startswith("."))


def unlisted(root: Path, listed: set[Path], where: str) -> list[Problem]:
    """Audio files in the tree that the metadata does not mention."""
    root = Path(root)
    # compare paths as found under root; resolve() (a syscall per path) only for the rest
    plain = {Path(p) for p in listed}
    resolved: set[Path] | None = None
    out = []
    for p in audio_files(root):
        if p in plain:
            continue
        if resolved is None:
            resolved = {q.resolve() for q in plain}
        if p.resolve() not in resolved:
            out.append(Problem(str(p), f"audio file not listed in {where}"))
    return out


def summarize(problems: list[Problem], limit: int = 20) -> str:
    """First ``limit`` problems by name, then a count of the rest."""
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def malformed(row: dict, columns: Iterable[str]) -> str | None:
    """A csv.DictReader row with too many or too few fields, described; None when it is whole."""
    columns = list(columns)
    if None in row or any(row.get(c) is None for c in columns):
        n = len([v for k, v in row.items() if k is not None and v is not None]) + len(row.get(None) or [])
        return f"malformed row: {n} fields, expected {len(columns)} ({','.join(columns)})"
    return None


def did_you_mean(root: Path, pattern: str) -> str | None:
    """For a wrong root: "did you mean <child>?" when ``root/<child>/<pattern>`` exists (the user
    pointed at the parent of the dataset folder), else None."""
    root = Path(root)
    below = sorted(root.glob(f"*/{pattern}")) if root.is_dir() else []
    if not below:
        return None
    return f"did you mean {root / below[0].relative_to(root).parts[0]}?"


def read_json(path: Path, kind: type = dict, what: str = "a JSON object") -> Any:
    """A publisher's JSON file; RecipeError naming the file when it does not parse or is not ``kind``."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise RecipeError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, kind):
        raise RecipeError(f"{path}: expected {what}, got {type(data).__name__}")
    return data
