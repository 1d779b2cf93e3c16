"""Exact and near-duplicate removal: a hash of the normalised text, then MinHash LSH (rensa).

Pure functions over lists of texts; the stage decides which text (input, output, both) and which
confidence. Each cluster of duplicates keeps its highest-confidence member (ties: the earliest).

Why rensa rather than datasketch: bench/dedupe.py measures both on the same records. rensa computes
a whole batch of MinHash signatures in Rust in one call, where datasketch hashes every shingle in
Python; the stage needs that speed at 100k+ records (see docs/curate.md for the figures).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

EXACT = "exact_duplicate"
NEAR = "near_duplicate"

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
# Fixed, so the same records always give the same signatures and the same dataset.
MINHASH_SEED = 42


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: what an exact duplicate must share."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_key(text: str) -> str:
    return hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=16).hexdigest()


def word_shingles(text: str, size: int) -> list[str]:
    """Case-folded word n-grams. Punctuation is dropped, so a moved comma changes nothing; a text
    shorter than ``size`` words is one shingle of all its words."""
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return [" ".join(words)] if words else [""]
    if size == 1:
        return words
    if size == 2:
        return [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]


def lsh_bands(threshold: float, num_perm: int, margin: float = 0.05) -> tuple[int, int]:
    """(bands, rows) for an LSH index, bands * rows == num_perm (rensa needs a divisor): the most
    rows per band whose S-curve midpoint (1/b)^(1/r) still lies ``margin`` below the threshold.
    Candidates are verified against the threshold afterwards, so a low midpoint costs only
    verification time but buys recall near the threshold, where MinHash estimates are noisy
    (sd ~ sqrt(J(1-J)/num_perm)); more rows keep unrelated pairs out of the candidate list."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if (1.0 / bands) ** (1.0 / rows) > threshold - margin:
            break
        best = (bands, rows)
    return best


@dataclass
class DedupeResult:
    """``kept_by[i]`` is the index of the record that represents record ``i`` (itself when kept)."""

    kept_by: list[int]
    reason: dict[int, str] = field(default_factory=dict)  # dropped index -> EXACT | NEAR
    candidate_pairs: int = 0
    verified_pairs: int = 0

    @property
    def kept(self) -> list[int]:
        return [i for i, k in enumerate(self.kept_by) if k == i]

    def counts(self) -> dict[str, int]:
        out = {EXACT: 0, NEAR: 0}
        for r in self.reason.values():
            out[r] += 1
        return out


def _better(a: int, b: int, confidences: Sequence[float | None]) -> int:
    """The higher-confidence index; a missing confidence ranks last; ties go to the earlier."""
    ca = confidences[a] if confidences[a] is not None else float("-inf")
    cb = confidences[b] if confidences[b] is not None else float("-inf")
    if ca != cb:
        return a if ca > cb else b
    return min(a, b)


def _clusters(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def near_duplicate_pairs(
    texts: Sequence[str], *, threshold: float, shingle_size: int, num_perm: int, num_bands: int | None = None
) -> tuple[list[tuple[int, int]], int]:
    """Pairs (i, j), i < j, whose estimated Jaccard similarity of word shingles is >= threshold.
    Returns the pairs and the number of LSH candidate pairs checked."""
    import rensa

    if len(texts) < 2:
        return [], 0
    shingle_sets = [word_shingles(t, shingle_size) for t in texts]
    minhashes = rensa.RMinHash.from_token_sets(shingle_sets, num_perm, MINHASH_SEED)
    bands = num_bands or lsh_bands(threshold, num_perm)[0]
    lsh = rensa.RMinHashLSH(threshold, num_perm, bands)
    lsh.insert_many(minhashes)
    pairs: list[tuple[int, int]] = []
    checked = 0
    for i, candidates in enumerate(lsh.query_all(minhashes)):
        mh = minhashes[i]
        for j in candidates:
            if j <= i:
                continue
            checked += 1
            if mh.jaccard(minhashes[j]) >= threshold:
                pairs.append((i, j))
    return pairs, checked


def dedupe(
    texts: Sequence[str],
    confidences: Sequence[float | None] | None = None,
    *,
    exact: bool = True,
    near: bool = True,
    threshold: float = 0.5,
    shingle_size: int = 2,
    num_perm: int = 128,
    num_bands: int | None = None,
) -> DedupeResult:
    """Drop exact duplicates (same normalised text), then near duplicates among the survivors.
    Each cluster keeps its highest-confidence member."""
    n = len(texts)
    conf = list(confidences) if confidences is not None else [None] * n
    kept_by = list(range(n))
    reason: dict[int, str] = {}
    alive = list(range(n))
    if exact:
        best_of_key: dict[str, int] = {}
        members: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            key = exact_key(t)
            members.setdefault(key, []).append(i)
            best_of_key[key] = i if key not in best_of_key else _better(best_of_key[key], i, conf)
        for key, idx in members.items():
            for i in idx:
                if i != best_of_key[key]:
                    kept_by[i] = best_of_key[key]
                    reason[i] = EXACT
        alive = [i for i in range(n) if kept_by[i] == i]
    result = DedupeResult(kept_by=kept_by, reason=reason)
    if near and len(alive) > 1:
        pairs, checked = near_duplicate_pairs(
            [texts[i] for i in alive],
            threshold=threshold,
            shingle_size=shingle_size,
            num_perm=num_perm,
            num_bands=num_bands,
        )
        result.candidate_pairs, result.verified_pairs = checked, len(pairs)
        for cluster in _clusters(len(alive), pairs):
            idx = [alive[c] for c in cluster]
            best = idx[0]
            for i in idx[1:]:
                best = _better(best, i, conf)
            for i in idx:
                if i != best:
                    kept_by[i] = best
                    reason[i] = NEAR
        # exact duplicates follow their representative if it was itself dropped as a near duplicate
        for i in range(n):
            if kept_by[i] != i and kept_by[kept_by[i]] != kept_by[i]:
                kept_by[i] = kept_by[kept_by[i]]
    return result
