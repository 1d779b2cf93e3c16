"""Benchmark: the curate stage's dedupe vs datasketch's MinHashLSH, on the same synthetic records.

    .venv/bin/python bench/dedupe.py            # 100,000 long + 20,000 short records (the target size)
    .venv/bin/python bench/dedupe.py --n 20000  # quicker, while developing (and 4,000 short)

Long records: English-like text (a Zipf-distributed vocabulary of function words and invented
words, sentences of 5-20 words), 30-200 words each. Planted duplicates:
  exact  - a copy differing only in case and whitespace;
  near   - a copy with 5-15% of its words replaced, inserted or deleted; half of them also have
           their sentences reordered.
Short records (bench/short_texts.py, --short, default n/5): posts, search queries and one-line
reviews under 8 words whose neighbours differ by one content word, emoticon or emoji; planted
exact copies (case, whitespace) and near copies (the same words, other punctuation).
Both sets are deduplicated together, as one curate run would; the figures are reported per set.
Each method runs in its own forked process (so peak memory is its own), one after the other.
Metrics per method: records/s; peak extra RSS (MiB); recall for exact and near separately (a
planted copy counts as found when it ends up represented by the same record as its original);
precision (of the dropped records, the share whose representative is from the same planted group).

Targets (2 cores): >= 8x datasketch's records/s; with the task defaults, on the long records every
exact duplicate found, >= 95% of near duplicates, precision >= 0.999; on the short records
precision >= 0.999. Ends with ONE JSON line of all figures and a ``targets_met`` map.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.short_texts import make_short_records
from pipeline.config.curate import DedupeConfig
from pipeline.curation.dedupe import dedupe, lsh_bands, word_shingles

FUNCTION_WORDS = ["the", "of", "and", "to", "a", "in", "is", "that", "it", "was", "for", "on", "are", "as", "with", "his", "they", "at", "be", "this", "from", "have", "or", "by", "one", "had", "not", "but", "what", "all", "were", "when", "we", "there", "can", "an", "your", "which", "their", "said", "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so", "these", "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time"]


def make_vocabulary(rng: random.Random, size: int = 20000) -> tuple[list[str], list[float]]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "ee")]
    words = list(FUNCTION_WORDS)
    seen = set(words)
    while len(words) < size:
        w = "".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(words))]  # Zipf, as in English
    return words, list(itertools.accumulate(weights))  # cumulative: random.choices is O(log n) then


def make_sentences(rng: random.Random, vocab, weights, n_words: int) -> list[list[str]]:
    words = rng.choices(vocab, cum_weights=weights, k=n_words)
    sentences, i = [], 0
    while i < n_words:
        length = min(rng.randint(5, 20), n_words - i)
        sentences.append(words[i : i + length])
        i += length
    return sentences


def render(sentences: list[list[str]]) -> str:
    return " ".join(" ".join(s).capitalize() + "." for s in sentences)


def exact_copy(rng: random.Random, text: str) -> str:
    out = []
    for tok in text.split(" "):
        r = rng.random()
        tok = tok.upper() if r < 0.15 else tok.lower() if r < 0.3 else tok.title() if r < 0.4 else tok
        out.append(tok + rng.choice((" ", " ", " ", "  ", "\n", "\t ")))
    return rng.choice(("", " ", "\n")) + "".join(out).rstrip() + rng.choice(("", "  ", "\n"))


def near_copy(rng: random.Random, sentences: list[list[str]], vocab, weights, reorder: bool) -> str:
    sentences = [list(s) for s in sentences]
    if reorder and len(sentences) > 1:
        order = list(range(len(sentences)))
        while order == sorted(order):
            rng.shuffle(order)
        sentences = [sentences[k] for k in order]
    n_words = sum(len(s) for s in sentences)
    for _ in range(max(1, round(n_words * rng.uniform(0.05, 0.15)))):
        s = rng.choice([s for s in sentences if s])
        op, pos = rng.choice(("replace", "insert", "delete")), rng.randrange(len(s))
        new_word = rng.choices(vocab, cum_weights=weights)[0]
        if op == "replace":
            s[pos] = new_word
        elif op == "insert":
            s.insert(pos, new_word)
        elif len(s) > 1:
            del s[pos]
    return render([s for s in sentences if s])


def make_records(n: int, seed: int = 0, exact_share: float = 0.08, near_share: float = 0.12):
    """Texts with (group, kind) per record: kind is original | exact | near."""
    rng = random.Random(seed)
    vocab, weights = make_vocabulary(rng)
    n_exact, n_near = int(n * exact_share), int(n * near_share)
    n_orig = n - n_exact - n_near
    originals = [make_sentences(rng, vocab, weights, rng.randint(30, 200)) for _ in range(n_orig)]
    rows = [(render(s), g, "original") for g, s in enumerate(originals)]
    for _ in range(n_exact):
        g = rng.randrange(n_orig)
        rows.append((exact_copy(rng, rows[g][0]), g, "exact"))
    for k in range(n_near):
        g = rng.randrange(n_orig)
        rows.append((near_copy(rng, originals[g], vocab, weights, reorder=k % 2 == 0), g, "near"))
    rng.shuffle(rows)
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def run_stage_dedupe(texts, cfg: DedupeConfig) -> list[int]:
    return dedupe(
        texts, exact=cfg.exact, near=cfg.near, threshold=cfg.threshold,
        shingle_size=cfg.shingle_size, num_perm=cfg.num_perm, num_bands=cfg.num_bands, min_words=cfg.min_words,
    ).kept_by


def run_datasketch(texts, threshold: float, shingle_size: int, num_perm: int) -> list[int]:
    """The usual datasketch recipe: bulk MinHash of the shingles, then query-then-insert."""
    from datasketch import MinHash, MinHashLSH

    sets = [[s.encode("utf-8") for s in word_shingles(t, shingle_size)] for t in texts]
    minhashes = MinHash.bulk(sets, num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept_by = list(range(len(texts)))
    for i, m in enumerate(minhashes):
        candidates = lsh.query(m)
        if candidates:
            kept_by[i] = kept_by[min(candidates)]
        else:
            lsh.insert(i, m)
    return kept_by


def score(kept_by, groups, kinds, subset) -> dict:
    """Recall and precision over the records of ``subset`` (a set of indices)."""
    rep_of_original = {g: kept_by[i] for i, (g, k) in enumerate(zip(groups, kinds)) if k == "original"}
    found = {"exact": 0, "near": 0}
    planted = {"exact": 0, "near": 0}
    for i in subset:
        g, k = groups[i], kinds[i]
        if k != "original":
            planted[k] += 1
            found[k] += kept_by[i] == rep_of_original[g]
    dropped = [i for i in subset if kept_by[i] != i]
    wrong = sum(groups[kept_by[i]] != groups[i] for i in dropped)
    return {
        "recall_exact": round(found["exact"] / max(planted["exact"], 1), 4),
        "recall_near": round(found["near"] / max(planted["near"], 1), 4),
        "precision": round(1 - wrong / max(len(dropped), 1), 5),
        "dropped": len(dropped),
        "distinct_dropped": wrong,
    }


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(fn, texts, groups, kinds, short: set[int]) -> dict:
    """Run ``fn(texts)`` in a forked child; return its speed, peak extra memory, and the scores on
    the long records (top level) and on the short ones (``short``)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        base = _rss_mib("VmRSS")
        t0 = time.perf_counter()
        kept_by = fn(texts)
        seconds = time.perf_counter() - t0
        out = {"seconds": round(seconds, 2), "records_per_s": round(len(texts) / seconds),
               "peak_mem_mib": round(_rss_mib("VmHWM") - base, 1),
               **score(kept_by, groups, kinds, [i for i in range(len(texts)) if i not in short]),
               "short": score(kept_by, groups, kinds, sorted(short))}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of long records (default 100000)")
    ap.add_argument("--short", type=int, default=None, help="number of short records (default n/5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-usual", action="store_true", help="skip datasketch at its usual settings")
    args = ap.parse_args()
    n_short = args.n // 5 if args.short is None else args.short

    t0 = time.perf_counter()
    texts, groups, kinds = make_records(args.n, args.seed)
    s_texts, s_groups, s_kinds, s_sources = make_short_records(n_short, args.seed + 1, group_offset=max(groups) + 1)
    short = set(range(len(texts), len(texts) + len(s_texts)))
    texts, groups, kinds = texts + s_texts, groups + s_groups, kinds + s_kinds
    print(f"generated {args.n} long records ({kinds[:args.n].count('exact')} exact, "
          f"{kinds[:args.n].count('near')} near duplicates planted) and {n_short} short ones "
          f"({s_kinds.count('exact')} exact, {s_kinds.count('near')} near; "
          + ", ".join(f"{s_sources.count(k)} {k}" for k in ("post", "query", "review"))
          + f") in {time.perf_counter() - t0:.1f}s", flush=True)
    cfg = DedupeConfig()  # the task defaults
    bands = cfg.num_bands or lsh_bands(cfg.threshold, cfg.num_perm)[0]
    print(f"defaults: shingle_size={cfg.shingle_size} threshold={cfg.threshold} num_perm={cfg.num_perm} "
          f"bands={bands} min_words={cfg.min_words}", flush=True)

    results = {"stage": measure(lambda t: run_stage_dedupe(t, cfg), texts, groups, kinds, short)}
    print("stage (rensa)           ", results["stage"], flush=True)
    results["datasketch"] = measure(
        lambda t: run_datasketch(t, cfg.threshold, cfg.shingle_size, cfg.num_perm), texts, groups, kinds, short)
    print("datasketch, same params ", results["datasketch"], flush=True)
    if not args.skip_usual:
        results["datasketch_usual"] = measure(
            lambda t: run_datasketch(t, 0.8, 5, 128), texts, groups, kinds, short)
        print("datasketch, 5-gram 0.8  ", results["datasketch_usual"], flush=True)

    s, d = results["stage"], results["datasketch"]
    speedup = round(s["records_per_s"] / d["records_per_s"], 2)
    targets = {
        "speedup_ge_8x": speedup >= 8,
        "all_exact_found": s["recall_exact"] == 1.0,
        "near_recall_ge_0.95": s["recall_near"] >= 0.95,
        "precision_ge_0.999": s["precision"] >= 0.999,
        "short_precision_ge_0.999": s["short"]["precision"] >= 0.999,
    }
    print(json.dumps({
        "bench": "dedupe", "n": args.n, "n_short": n_short, "cores": os.cpu_count(),
        "defaults": {"shingle_size": cfg.shingle_size, "threshold": cfg.threshold,
                     "num_perm": cfg.num_perm, "bands": bands, "min_words": cfg.min_words},
        **results, "speedup_vs_datasketch": speedup, "targets_met": targets,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
