"""Decontamination: drop training examples that share a word n-gram with an eval input.

The eval side is the task's ``eval.source`` (the real inputs the student is scored on) plus any
``decontam.extra_files``. Both sides are case-folded word sequences (``\\w+``). An example is
contaminated when it contains any n-gram (13 words by default, as in GPT-3's decontamination) of
an eval text; an eval text shorter than n words is matched when an example's text equals it.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import InputDataError

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.casefold())


def ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


@dataclass
class EvalIndex:
    """The n-grams of every eval text, and which source each came from."""

    n: int
    grams: dict[tuple[str, ...], str] = field(default_factory=dict)
    short_texts: dict[tuple[str, ...], str] = field(default_factory=dict)
    texts_per_source: dict[str, int] = field(default_factory=dict)

    def add(self, text: str, source: str) -> None:
        tokens = words(text)
        if not tokens:
            return
        self.texts_per_source[source] = self.texts_per_source.get(source, 0) + 1
        if len(tokens) < self.n:
            self.short_texts.setdefault(tuple(tokens), source)
            return
        for g in ngrams(tokens, self.n):
            self.grams.setdefault(g, source)

    def match(self, text: str) -> tuple[str, str] | None:
        """(source, the overlapping words) of the first overlap found, or None."""
        tokens = words(text)
        hit = self.short_texts.get(tuple(tokens))
        if hit is not None:
            return hit, " ".join(tokens)
        for g in ngrams(tokens, self.n):
            hit = self.grams.get(g)
            if hit is not None:
                return hit, " ".join(g)
        return None


def strings_in(row: Any, column: str | None) -> list[str]:
    if column is not None:
        value = row.get(column) if isinstance(row, dict) else None
        return [value] if isinstance(value, str) else []
    if isinstance(row, str):
        return [row]
    if isinstance(row, dict):
        return [v for v in row.values() if isinstance(v, str)]
    return []


def read_extra_file(path: Path, column: str | None) -> list[str]:
    """Texts of one decontam.extra_files entry: JSONL/CSV rows (``column`` or every string value),
    or a plain text file (one text per line)."""
    import csv

    if not path.exists():
        raise InputDataError(f"{path}: decontam.extra_files entry not found; fix the path (relative to the task folder)")
    texts: list[str] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if path.suffix in (".jsonl", ".ndjson"):
                for lineno, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            texts.extend(strings_in(json.loads(line), column))
                        except json.JSONDecodeError as exc:
                            raise InputDataError(f"{path}:{lineno}: malformed JSON ({exc.msg}); fix or delete the line") from None
            elif path.suffix in (".csv", ".tsv"):
                for row in csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","):
                    texts.extend(strings_in(row, column))
            else:
                texts.extend(line.strip() for line in fh if line.strip())
    except UnicodeDecodeError:
        raise InputDataError(f"{path}: not UTF-8 text; re-encode the file as UTF-8") from None
    if column is not None and not texts:
        raise InputDataError(f"{path}: no string values in column '{column}'; fix decontam.field")
    return texts
