"""Vectorised text hashing for dedupe: an exact-duplicate key and the word-shingle hashes per text.

Why hand-written rather than a library tokenizer: at 100k+ records any per-word Python step
(``re.findall``, building shingle strings) costs more than the whole MinHash computation in rensa,
which takes a flat buffer of pre-hashed tokens. So texts are hashed in numpy, a few thousand bytes
at a time: small arrays stay in malloc's reused heap instead of fresh page-faulting mmaps, which
made whole-corpus arrays ~10x slower per element in measurement.

Definitions (tests/test_curate_dedupe.py checks them against the plain-Python versions):
- exact key: NFKC (non-ASCII texts only), case-folded, whitespace runs collapsed; 128 bits.
- words: the tokens of ``text_tokens``: maximal runs of ``\\w`` characters of the case-folded text,
  each emoticon (``:)``, ``:'(``, ``<3``) and emoji, and ``c++`` / ``c#``; other punctuation is
  dropped. A short post's emoticon is often all it says: "@user :'(" and "@user :)" must not share
  their only token.
- sequence key: the words in order; 128 bits (what two short texts must share to be duplicates).
- shingles: ``size`` consecutive words; a text with fewer words is one shingle of all of them.
All hashes are polynomial hashes mod 2^64 with fixed constants: deterministic across runs.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

_CHUNK_BYTES = 1 << 16
# Western emoticons: eyes, an optional nose or tear, a mouth of symbols (repeats kept: ":)))" is its
# own token) or one letter that no word follows (":D", ":p", but not the "d" of "note:do").
_EMOTICON = r"""[:;=]['"]?[-o^]?(?:[)(\]\[/\\|*@$}{<>]+|[dpox3](?!\w))|</?3+|\^[_.-]?\^"""
# Emoji: the pictographic blocks, each with its skin-tone / variation modifiers and ZWJ sequences
# ("👩‍💻" is one token). Python's re has no \p{Extended_Pictographic}, hence the ranges.
_PICTO = "[\u2190-\u21ff\u2300-\u23ff\u2460-\u24ff\u25a0-\u27bf\u2900-\u297f\u2b00-\u2bff\u3030\u303d\U0001F000-\U0001FAFF]"
_MODS = "[\ufe0f\u20e3\U0001F3FB-\U0001F3FF]*"
_EMOJI = f"{_PICTO}{_MODS}(?:\u200d{_PICTO}{_MODS})*"
# A word whose trailing symbols name something else: "c++" and "c#" are not "c".
_SYMBOL_WORD = r"(?<!\w)\w++(?:\+\+|#)(?!\w)"  # tried at word starts only, and never backtracks
_TOKEN = re.compile(f"{_EMOJI}|{_EMOTICON}|{_SYMBOL_WORD}|\\w+")
_WORD = re.compile(r"\w+")
_NON_WORD = re.compile(r"[^\w]+")
_SYMBOL_TOKEN = re.compile(f"{_EMOJI}|{_EMOTICON}|{_SYMBOL_WORD}")
# An ASCII text without these characters holds no symbol token: it skips the regex (``in`` is a memchr).
_SYMBOL_CHARS = ":;=<^+#"
# A symbol token is hashed as this letter plus its UTF-8 bytes in hex: a \w run, unlike any real word.
_STAND_IN = "\u01c2"
_U64 = np.uint64
_BASES = (_U64(0x100000001B3), _U64(0x9E3779B97F4A7C15 | 1), _U64(0xC2B2AE3D27D4EB4F))
_MIX1, _MIX2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
EMPTY_SHINGLE = 0x5EED0000000000F1

_WORD_BYTES = np.zeros(256, dtype=bool)
_WORD_BYTES[list(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")] = True
_WORD_BYTES[128:] = True  # UTF-8 bytes of non-ASCII word characters (a non-word one was rewritten away)
_TOKEN_BYTES = np.ones(256, dtype=bool)  # exact key: anything but whitespace
_TOKEN_BYTES[list(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")] = False

_powers: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def text_tokens(folded: str) -> list[str]:
    """The words, emoticons, emoji (and ``c++``, ``c#``) of a case-folded (and, if not ASCII, NFKC)
    text, in order."""
    return _TOKEN.findall(folded)


def _word_text(folded: str) -> str | None:
    """The text as the byte classes below must see it (words and stand-ins between spaces), or
    None when they read it right as it is: ASCII with no symbol token, the common case."""
    plain = folded.isascii()
    if (not plain or any(c in folded for c in _SYMBOL_CHARS)) and _SYMBOL_TOKEN.search(folded):
        return " ".join(tok if _WORD.fullmatch(tok) else _STAND_IN + tok.encode("utf-8").hex()
                        for tok in _TOKEN.findall(folded))
    return None if plain else _NON_WORD.sub(" ", folded)  # Unicode punctuation's bytes look like a word's


def _power_tables(base_index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """base^i and base^-i (mod 2^64) for i < n, cached and grown as needed."""
    have = _powers.get(base_index)
    if have is None or len(have[0]) < n:
        size = max(n, _CHUNK_BYTES * 4)
        base = _BASES[base_index]
        inverse = _U64(pow(int(base), -1, 1 << 64))
        with np.errstate(over="ignore"):
            pw = np.full(size, base, dtype=_U64)
            pw[0] = 1
            ipw = np.full(size, inverse, dtype=_U64)
            ipw[0] = 1
            have = (np.cumprod(pw), np.cumprod(ipw))
        _powers[base_index] = have
    return have


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial hash over all 64 bits."""
    h = h ^ (h >> _U64(30))
    h = h * _MIX1
    h = h ^ (h >> _U64(27))
    h = h * _MIX2
    return h ^ (h >> _U64(31))


def _prefix(values: np.ndarray, base_index: int) -> np.ndarray:
    pw, _ = _power_tables(base_index, len(values) + 1)
    prefix = np.zeros(len(values) + 1, dtype=_U64)
    np.cumsum(values.astype(_U64) * pw[: len(values)], out=prefix[1:])
    return prefix


def _segment_hashes(prefix: np.ndarray, starts: np.ndarray, ends: np.ndarray, base_index: int) -> np.ndarray:
    """Position-independent polynomial hash of values[s:e] for each (s, e), from ``_prefix(values)``."""
    _, ipw = _power_tables(base_index, len(prefix))
    return (prefix[ends] - prefix[starts]) * ipw[starts]


def _runs(buf: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the maximal runs of member bytes; ``buf`` begins and ends with a non-member."""
    inside = member[buf]
    starts = np.flatnonzero(inside[1:] & ~inside[:-1]) + 1
    ends = np.flatnonzero(inside[:-1] & ~inside[1:]) + 1
    return starts, ends


def _per_doc_sum(hashes: np.ndarray, doc_of: np.ndarray, n_docs: int, base_index: int) -> np.ndarray:
    """Order-dependent combination of each doc's hashes; 0 for a doc with none."""
    first = np.searchsorted(doc_of, np.arange(n_docs + 1))
    return _segment_hashes(_prefix(hashes, base_index), first[:-1], first[1:], base_index)


def _buffer(views: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The texts joined by newlines, with a newline before and after, and where each text starts."""
    lengths = np.fromiter(map(len, views), dtype=np.int64, count=len(views))
    doc_start = np.concatenate(([1], 1 + np.cumsum(lengths + 1)[:-1]))
    return np.frombuffer(b"\n" + b"\n".join(views) + b"\n", dtype=np.uint8), doc_start


def _chunk(texts: list[str], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(exact keys, sequence keys, flat shingle hashes, shingles per text, words per text) for a
    few thousand bytes of texts."""
    folded = [t.casefold() if t.isascii() else unicodedata.normalize("NFKC", t).casefold() for t in texts]
    exact_bytes = [t.encode("utf-8") for t in folded]
    n = len(texts)
    keys, seq_keys = np.empty((n, 2), dtype=_U64), np.empty((n, 2), dtype=_U64)
    with np.errstate(over="ignore"):
        buf, doc_start = _buffer(exact_bytes)
        prefix = _prefix(buf, 0)
        starts, ends = _runs(buf, _TOKEN_BYTES)
        token_hash = _mix(_segment_hashes(prefix, starts, ends, 0))
        doc_of = np.searchsorted(doc_start, starts, side="right") - 1
        keys[:, 0] = _per_doc_sum(token_hash, doc_of, n, 1)
        keys[:, 1] = _per_doc_sum(token_hash, doc_of, n, 2)
        rewritten = [_word_text(t) for t in folded]
        if any(w is not None for w in rewritten):
            words = [b if w is None else w.encode("utf-8") for w, b in zip(rewritten, exact_bytes)]
            buf, doc_start = _buffer(words)
            prefix = _prefix(buf, 0)
        starts, ends = _runs(buf, _WORD_BYTES)
        word_hash = _mix(_segment_hashes(prefix, starts, ends, 0))
        doc_of = np.searchsorted(doc_start, starts, side="right") - 1
        seq_keys[:, 0] = _per_doc_sum(word_hash, doc_of, n, 1)
        seq_keys[:, 1] = _per_doc_sum(word_hash, doc_of, n, 2)
        flat, counts = _shingles(word_hash, doc_of, n, size)
    return keys, seq_keys, flat, counts, np.bincount(doc_of, minlength=n)


def _shingles(words: np.ndarray, doc_of: np.ndarray, n_docs: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat shingle hashes in text order, and how many each text has."""
    counts = np.bincount(doc_of, minlength=n_docs)
    m = len(words) - size + 1
    if size == 1:
        grams, gram_doc = words, doc_of
    elif m > 0:
        grams = words[:m].copy()
        for j in range(1, size):
            grams = _mix(grams * _BASES[0] + words[j : j + m])
        valid = doc_of[:m] == doc_of[size - 1 :]
        grams, gram_doc = grams[valid], doc_of[:m][valid]
    else:
        grams, gram_doc = words[:0], doc_of[:0]
    short = np.flatnonzero(counts < size)
    if len(short) == 0:
        return grams, counts - (size - 1)
    # a text with fewer words than a shingle is one shingle of all its words (none: EMPTY_SHINGLE)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    extra, extra_doc = [], []
    for d in short:
        acc = np.array([EMPTY_SHINGLE], dtype=_U64) if counts[d] == 0 else words[bounds[d] : bounds[d] + 1].copy()
        for j in range(1, counts[d]):
            acc = _mix(acc * _BASES[0] + words[bounds[d] + j : bounds[d] + j + 1])
        extra.append(acc)
        extra_doc.append(d)
    all_doc = np.concatenate((gram_doc, np.array(extra_doc, dtype=gram_doc.dtype)))
    order = np.argsort(all_doc, kind="stable")
    return np.concatenate((grams, *extra))[order], np.bincount(all_doc, minlength=n_docs)


@dataclass
class TextHashes:
    """What dedupe compares, for n texts: row ``i`` of ``shingles`` is ``shingles[offsets[i]:offsets[i + 1]]``."""

    exact_keys: np.ndarray  # (n, 2) uint64: the normalised text
    sequence_keys: np.ndarray  # (n, 2) uint64: the words in order, punctuation aside
    shingles: np.ndarray  # flat uint64 shingle hashes
    offsets: np.ndarray  # (n + 1) uint64
    n_words: np.ndarray  # (n,) int64


def hash_texts(texts: list[str], shingle_size: int) -> TextHashes:
    """Every text's exact key, sequence key, shingle hashes and word count."""
    n = len(texts)
    keys, seq_keys = np.empty((n, 2), dtype=_U64), np.empty((n, 2), dtype=_U64)
    counts, n_words = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    # Written in place rather than concatenated at the end (which would hold every shingle twice).
    # An ASCII text of L characters has at most (L + 1) / 2 words; np.empty only becomes resident
    # where written, so the generous size costs address space, not memory. Grown if NFKC expands.
    flat = np.empty(sum(map(len, texts)) // 2 + n + 1, dtype=_U64)
    used = i = 0
    while i < n:
        j, budget = i, 0
        while j < n and (j == i or budget + len(texts[j]) < _CHUNK_BYTES):
            budget += len(texts[j]) + 1
            j += 1
        keys[i:j], seq_keys[i:j], chunk_flat, counts[i:j], n_words[i:j] = _chunk(list(texts[i:j]), shingle_size)
        if used + len(chunk_flat) > len(flat):
            grown = np.empty(max(2 * len(flat), used + len(chunk_flat)), dtype=_U64)
            grown[:used] = flat[:used]
            flat = grown
        flat[used : used + len(chunk_flat)] = chunk_flat
        used += len(chunk_flat)
        i = j
    offsets = np.zeros(n + 1, dtype=_U64)
    np.cumsum(counts, out=offsets[1:])
    return TextHashes(keys, seq_keys, flat[:used], offsets, n_words)
