"""Exact and near-duplicate removal: a hash of the normalised text, then MinHash LSH (rensa).

Pure functions over lists of texts; the stage decides which text (input, output, both) and which
confidence. Each group of duplicates keeps its highest-confidence member (ties: the earliest); a near
duplicate is dropped only for a kept record it resembles itself.
A text shorter than ``min_words`` words is a near duplicate only of a text with the same words,
emoticons and emoji in the same order: one changed word is a small edit of a paragraph but a new
query, and Jaccard similarity on 2-word shingles cannot tell the two apart.

Why rensa rather than datasketch: bench/dedupe.py measures both on the same records. rensa computes
a whole batch of MinHash signatures in Rust in one call, where datasketch hashes every shingle in
Python; the stage needs that speed at 100k+ records (see docs/curate.md for the figures).
"""
from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.curation.shingles import hash_texts, text_tokens

EXACT = "exact_duplicate"
NEAR = "near_duplicate"

_SPACE = re.compile(r"\s+")
# Fixed, so the same records always give the same signatures and the same dataset.
MINHASH_SEED = 42
_BUCKET_REACH = 8
_READBACK_ROWS = 2048


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: what an exact duplicate must share (the
    reference definition; the stage compares a 128-bit hash of it, see shingles.py)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def words_of(text: str) -> list[str]:
    """The case-folded words (after NFKC), emoticons and emoji of ``text``, in order; other
    punctuation is dropped, so a moved comma changes nothing."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text_tokens(text.casefold())


def word_shingles(text: str, size: int) -> list[str]:
    """Word n-grams of ``words_of(text)``; a text shorter than ``size`` words is one shingle of all
    its words. The stage hashes the same shingles vectorised (pipeline/curation/shingles.py); this
    is the reference definition the tests compare against, and what the bench feeds datasketch."""
    words = words_of(text)
    if len(words) <= size:
        return [" ".join(words)] if words else [""]
    if size == 1:
        return words
    if size == 2:
        return [f"{a} {b}" for a, b in itertools.pairwise(words)]
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
    flagged: int = 0  # texts sharing an LSH band with another
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


def _stars(pairs: list[tuple[int, int]], confidences: Sequence[float | None]) -> dict[int, int]:
    """{dropped: the kept record it duplicates}, every dropped record a verified near duplicate of its
    own representative. Records are taken best first (``_better``'s order); each that no kept record
    has claimed is kept and claims its unclaimed neighbours. Not the transitive closure (union-find):
    on templated short texts a chain of one-slot edits ("a rental car in Paris tonight" ~ "... in Rome
    tonight" ~ "a hotel room in Rome tonight" ~ ...) joins texts that share neither meaning nor half
    their shingles, and a component would keep one of them. (Written here: datasketch and rensa give
    the pairs, not a grouping.)"""
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)

    def rank(i: int) -> tuple[float, int]:
        c = confidences[i]
        return (-(c if c is not None else float("-inf")), i)

    dropped: dict[int, int] = {}
    for i in sorted(neighbours, key=rank):
        if i in dropped:
            continue
        for j in neighbours[i]:
            if j not in dropped and rank(j) > rank(i):
                dropped[j] = i
    return dropped


def _band_pairs(digests: np.ndarray, bands: int) -> np.ndarray:
    """Candidate pairs (i < j), as an (m, 2) array: rows that agree on every value of some band.
    Within a bucket, each row is paired with the next ``_BUCKET_REACH`` rows of the bucket, so small
    buckets give all their pairs and a large one is still linked up without quadratic cost."""
    n, num_perm = digests.shape
    rows = num_perm // bands
    found = []
    with np.errstate(over="ignore"):
        for b in range(bands):
            block = digests[:, b * rows : (b + 1) * rows].astype(np.uint64)
            key = np.zeros(n, dtype=np.uint64)
            for c in range(rows):
                key = (key ^ block[:, c]) * np.uint64(0x100000001B3)
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            for reach in range(1, _BUCKET_REACH + 1):
                same = np.flatnonzero(sorted_key[reach:] == sorted_key[:-reach])
                if len(same) == 0:
                    break
                found.append(np.stack((order[same], order[same + reach]), axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(np.concatenate(found), axis=1)
    return np.unique(pairs, axis=0)


def _rows(flat: np.ndarray, offsets: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shingle rows of the texts ``pick``, as a new (flat, offsets) pair."""
    starts = offsets[pick].astype(np.int64)
    lengths = (offsets[pick + 1] - offsets[pick]).astype(np.int64)
    new_offsets = np.zeros(len(pick) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=new_offsets[1:])
    index = np.repeat(starts - new_offsets[:-1].astype(np.int64), lengths) + np.arange(int(new_offsets[-1]))
    return flat[index], new_offsets


def near_duplicate_pairs(
    flat: np.ndarray,
    offsets: np.ndarray,
    *,
    threshold: float,
    num_perm: int,
    num_bands: int | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Pairs (i, j) of texts (given as shingle-hash rows) whose estimated Jaccard similarity is
    >= threshold, and counts of the work done.

    rensa computes every signature in one call and flags the texts that share an LSH band with any
    other; only those (usually a small share) have their signatures read back into numpy, where the
    bands give candidate pairs and the signatures verify them."""
    import rensa

    n = len(offsets) - 1
    stats = {"flagged": 0, "candidate_pairs": 0, "verified_pairs": 0}
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), stats
    bands = num_bands or lsh_bands(threshold, num_perm)[0]
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, MINHASH_SEED)
    flags = rensa.RMinHashLSH(threshold, num_perm, bands).query_duplicate_flags_matrix_one_shot(matrix)
    del matrix  # up to n x num_perm values; only the flagged rows are needed from here on
    flagged = np.flatnonzero(np.asarray(flags, dtype=bool))
    stats["flagged"] = len(flagged)
    if len(flagged) < 2:
        return np.zeros((0, 2), dtype=np.int64), stats
    # Read back in slices: to_rows() gives Python ints (~36 bytes each), so a whole read-back
    # would briefly cost ~10x the numpy array it fills.
    digests = np.empty((len(flagged), num_perm), dtype=np.uint32)  # RMinHash values are 32-bit
    for lo in range(0, len(flagged), _READBACK_ROWS):
        sub_flat, sub_offsets = _rows(flat, offsets, flagged[lo : lo + _READBACK_ROWS])
        sub = rensa.RMinHash.digest_matrix_from_flat_token_hashes(sub_flat, sub_offsets, num_perm, MINHASH_SEED)
        digests[lo : lo + _READBACK_ROWS] = sub.to_rows()
    candidates = _band_pairs(digests, bands)
    stats["candidate_pairs"] = len(candidates)
    keep = np.zeros(len(candidates), dtype=bool)
    for lo in range(0, len(candidates), 4096):  # bounded memory: 4096 x num_perm comparisons at a time
        part = candidates[lo : lo + 4096]
        keep[lo : lo + 4096] = (digests[part[:, 0]] == digests[part[:, 1]]).mean(axis=1) >= threshold
    verified = flagged[candidates[keep]]
    stats["verified_pairs"] = len(verified)
    return verified, stats


def _key_groups(keys: np.ndarray, members: np.ndarray) -> list[list[int]]:
    """The indices ``members`` grouped by equal rows of ``keys``; only groups of two or more."""
    if len(members) < 2:
        return []
    _, inverse, counts = np.unique(keys[members], axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    groups: dict[int, list[int]] = {}
    for k in np.flatnonzero(counts[inverse] > 1).tolist():
        groups.setdefault(int(inverse[k]), []).append(int(members[k]))
    return list(groups.values())


def _subset_rows(flat: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shingle rows of the texts ``keep`` (sorted indices); a mask costs 1 byte per shingle, an index 8."""
    lengths = np.diff(offsets).astype(np.int64)
    mask = np.zeros(len(lengths), dtype=bool)
    mask[keep] = True
    new_offsets = np.zeros(len(keep) + 1, dtype=np.uint64)
    np.cumsum(lengths[keep], out=new_offsets[1:])
    return flat[np.repeat(mask, lengths)], new_offsets


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
    min_words: int = 8,
) -> DedupeResult:
    """Drop exact duplicates (same normalised text), then near duplicates among the survivors: texts
    of ``min_words`` words or more by MinHash LSH at ``threshold``, shorter ones only with the same
    word sequence. Each group keeps its highest-confidence member; a near duplicate is dropped only
    for a kept record it is itself similar to (``_stars``)."""
    n = len(texts)
    conf = list(confidences) if confidences is not None else [None] * n
    kept_by = list(range(n))
    result = DedupeResult(kept_by=kept_by)
    if n == 0:
        return result
    hashed = hash_texts(list(texts), shingle_size)

    def merge(cluster: list[int], reason: str) -> None:
        best = cluster[0]
        for i in cluster[1:]:
            best = _better(best, i, conf)
        for i in cluster:
            if i != best:
                kept_by[i] = best
                result.reason[i] = reason

    alive = np.arange(n)
    if exact:
        for members in _key_groups(hashed.exact_keys, alive):
            merge(members, EXACT)
        alive = np.array([i for i in range(n) if kept_by[i] == i], dtype=np.int64)
    if near and len(alive) > 1:
        short = hashed.n_words[alive] < min_words
        for members in _key_groups(hashed.sequence_keys, alive[short]):
            merge(members, NEAR)
        long_ = alive[~short]
        flat, offsets = hashed.shingles, hashed.offsets
        if len(long_) < n:
            flat, offsets = _subset_rows(flat, offsets, long_)
        pairs, stats = near_duplicate_pairs(flat, offsets, threshold=threshold, num_perm=num_perm,
                                            num_bands=num_bands)
        result.flagged, result.candidate_pairs, result.verified_pairs = (
            stats["flagged"], stats["candidate_pairs"], stats["verified_pairs"])
        for d, k in _stars(pairs.tolist(), [conf[int(i)] for i in long_]).items():
            kept_by[int(long_[d])] = int(long_[k])
            result.reason[int(long_[d])] = NEAR
        # exact duplicates follow their representative if it was itself dropped as a near duplicate
        for i in range(n):
            if kept_by[i] != i and kept_by[kept_by[i]] != kept_by[i]:
                kept_by[i] = kept_by[kept_by[i]]
    return result
