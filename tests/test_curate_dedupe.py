"""Dedupe: planted exact and near duplicates are found, distinct records kept, the best one wins."""
from __future__ import annotations

import random

from bench.dedupe import make_records
from bench.short_texts import make_short_records
from pipeline.config.curate import DedupeConfig
from pipeline.curation.dedupe import EXACT, NEAR, dedupe, lsh_bands, normalise_text, word_shingles, words_of

BASE = ("The acting in this quiet drama is superb and the ending stayed with me for days. "
        "Every scene feels honest, the score never pushes too hard, and the two leads share a warmth "
        "that carries the slower middle act without any trouble at all.")


def _defaults() -> dict:
    c = DedupeConfig()
    return {"threshold": c.threshold, "shingle_size": c.shingle_size, "num_perm": c.num_perm,
            "num_bands": c.num_bands, "min_words": c.min_words}


def test_exact_duplicates_differ_only_in_case_and_whitespace():
    assert normalise_text("  The  Film\n\tWAS good ") == normalise_text("the film was GOOD")
    texts = [BASE, BASE.upper(), "  " + BASE.replace(" ", "\n  "), "A different review altogether, short."]
    result = dedupe(texts, near=False)
    assert result.kept == [0, 3]
    assert result.reason == {1: EXACT, 2: EXACT}


def test_near_duplicate_with_edits_and_reordered_sentences_is_found():
    words = BASE.split()
    rng = random.Random(1)
    edited = list(words)
    for _ in range(4):  # ~10% of the words replaced
        edited[rng.randrange(len(edited))] = "banana"
    sentences = " ".join(edited).split(". ")
    near = ". ".join(reversed(sentences))
    other = ("A loud, messy action movie with a plot that makes no sense and explosions every five minutes; "
             "the villain is forgettable and the jokes land flat, but the car chase near the end is fun.")
    result = dedupe([BASE, near, other], **_defaults())
    assert result.reason == {1: NEAR}
    assert result.kept == [0, 2]


def test_short_texts_one_word_apart_are_distinct_but_punctuation_alone_is_a_duplicate():
    texts = ["a warm film about family", "a warm film about war", "A warm film, about family!"]
    result = dedupe(texts, **_defaults())
    assert result.reason == {2: NEAR} and result.kept == [0, 1]
    loose = dedupe(texts[:2], **{**_defaults(), "min_words": 1})
    assert loose.reason == {1: NEAR}  # 2-word shingles alone: J = 3/5 >= 0.5


def test_a_post_whose_emoticon_differs_is_not_a_duplicate():
    # the emoticon is all the first post says: it used to be dropped, leaving "user" == "user"
    texts = ["@user :'(", "@user :) :) :)", "@USER :'(", "@user :)", "Thanks:)", "thanks :)", "I love it 😍",
             "i LOVE it!! 😍", "I love it 😡"]
    result = dedupe(texts, **_defaults())
    assert result.reason == {2: EXACT, 5: NEAR, 7: NEAR}
    assert result.kept_by[5] == 4 and result.kept_by[7] == 6
    assert words_of("@user :'( 👩\u200d💻") == ["user", ":'(", "👩\u200d💻"]
    assert words_of("note:do this") == ["note", "do", "this"]  # a colon before a word is no emoticon


def test_short_search_queries_that_differ_in_a_content_word_stay_apart():
    queries = ["cheap flights to paris", "cheap flights to rome", "Cheap flights to Paris?", "c++ tutorial",
               "c# tutorial", "how to reset iphone 12", "how to reset iphone 13", "weather today",
               "weather tomorrow", "new york to boston", "boston to new york"]
    result = dedupe(queries, **_defaults())
    assert result.reason == {2: NEAR} and result.kept_by[2] == 0


def test_short_texts_need_the_same_words_in_order_while_long_ones_are_compared_by_shingles():
    # {"a b", "b a"} is the 2-shingle set of both; only the word sequence tells them apart
    assert dedupe(["a b a", "b a b a"], **_defaults()).reason == {}
    long_a = "a b a b a b a b a"
    assert dedupe([long_a, long_a + " b"], **_defaults()).reason == {1: NEAR}


def test_the_most_confident_record_of_a_cluster_is_kept():
    texts = [BASE, BASE.lower(), BASE + " Truly."]
    result = dedupe(texts, [0.2, 0.9, 0.5], **_defaults())
    assert result.kept == [1]
    assert result.kept_by == [1, 1, 1]


def test_missing_confidence_ranks_last_and_ties_keep_the_first():
    assert dedupe([BASE, BASE], [None, 0.1], near=False).kept == [1]
    assert dedupe([BASE, BASE], [0.5, 0.5], near=False).kept == [0]


def test_synthetic_corpus_planted_duplicates_found_distinct_records_kept():
    texts, groups, kinds = make_records(1500, seed=3)
    result = dedupe(texts, **_defaults())
    rep = {g: result.kept_by[i] for i, (g, k) in enumerate(zip(groups, kinds)) if k == "original"}
    exact = [i for i, k in enumerate(kinds) if k == "exact"]
    near = [i for i, k in enumerate(kinds) if k == "near"]
    assert all(result.kept_by[i] == rep[groups[i]] for i in exact)
    assert sum(result.kept_by[i] == rep[groups[i]] for i in near) >= 0.6 * len(near)
    dropped = [i for i in range(len(texts)) if result.kept_by[i] != i]
    assert all(groups[result.kept_by[i]] == groups[i] for i in dropped)  # no distinct record dropped
    assert {groups[i] for i in result.kept} == set(groups)  # every distinct text keeps one record


def test_short_posts_queries_and_reviews_lose_only_their_planted_copies():
    texts, groups, kinds, _ = make_short_records(3000, seed=5)
    result = dedupe(texts, **_defaults())
    rep = {g: result.kept_by[i] for i, (g, k) in enumerate(zip(groups, kinds)) if k == "original"}
    assert all(result.kept_by[i] == rep[groups[i]] for i, k in enumerate(kinds) if k != "original")
    dropped = [i for i in range(len(texts)) if result.kept_by[i] != i]
    assert all(groups[result.kept_by[i]] == groups[i] for i in dropped)  # one content word apart: kept


def test_shingles_and_bands():
    assert word_shingles("Hello, world! Hello", 2) == ["hello world", "world hello"]
    assert word_shingles("one", 3) == ["one"]
    bands, rows = lsh_bands(0.5, 128)
    assert bands * rows == 128 and (1 / bands) ** (1 / rows) <= 0.45


UNICODE_TEXTS = [
    "@user :'(",
    "@user :) :) :)",
    "so tired today 😴 :-(",
    "👩\u200d💻 c++ and c# <3 ^_^",
    "Café “Olé” — the crème brûlée was great!",
    "CAFÉ \u201colé\u201d \u2014 THE CRÈME BRÛLÉE WAS GREAT!",
    "Cafe\u0301 ole\u0301 the cre\u0300me bru\u0302le\u0301e was great",  # decomposed accents: NFKC makes them equal
    "two words",
    "one",
    "",
    "   ",
    "日本語 の テキスト です",
    "snake_case and digits 123 stay words",
    "\u00bc" * 100,  # NFKC turns each into "1/4": more words than characters, so the buffer must grow
]


def test_vectorised_hashing_matches_the_plain_python_definitions():
    from pipeline.curation.shingles import hash_texts

    texts = UNICODE_TEXTS + [t.upper() for t in UNICODE_TEXTS] + [t + " extra" for t in UNICODE_TEXTS]
    for size in (1, 2, 3):
        h = hash_texts(texts, size)
        flat, offsets = h.shingles, h.offsets
        rows = [frozenset(flat[offsets[i]:offsets[i + 1]].tolist()) for i in range(len(texts))]
        reference = [frozenset(word_shingles(t, size)) for t in texts]
        for i in range(len(texts)):
            assert int(offsets[i + 1] - offsets[i]) == max(len(word_shingles(texts[i], size)), 1)
            assert int(h.n_words[i]) == len(words_of(texts[i]))
            for j in range(len(texts)):
                same_key = tuple(h.exact_keys[i]) == tuple(h.exact_keys[j])
                assert same_key == (normalise_text(texts[i]) == normalise_text(texts[j])), (texts[i], texts[j])
                same_words = tuple(h.sequence_keys[i]) == tuple(h.sequence_keys[j])
                assert same_words == (words_of(texts[i]) == words_of(texts[j])), (texts[i], texts[j])
                assert (rows[i] == rows[j]) == (reference[i] == reference[j]), (size, texts[i], texts[j])


def test_chunk_boundaries_do_not_change_the_hashes(monkeypatch):
    from pipeline.curation import shingles

    texts, _, _ = make_records(60, seed=4)
    whole = vars(shingles.hash_texts(texts, 2))
    monkeypatch.setattr(shingles, "_CHUNK_BYTES", 700)  # about one text per chunk
    split = vars(shingles.hash_texts(texts, 2))
    for name, array in whole.items():
        assert (array == split[name]).all(), name


def test_num_bands_must_divide_num_perm():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="must divide"):
        DedupeConfig(num_perm=128, num_bands=48)


def test_a_chain_of_near_duplicates_keeps_what_no_kept_record_resembles():
    """A ~ B ~ C, but A is not C: the best (A) drops B, and C stays (a union-find of the pairs would
    drop C for A)."""
    from pipeline.curation.dedupe import _stars

    assert _stars([(0, 1), (1, 2)], [0.9, 0.5, 0.4]) == {1: 0}
    assert _stars([(0, 1), (1, 2)], [0.4, 0.9, 0.5]) == {0: 1, 2: 1}


def test_templated_queries_are_dropped_only_for_a_query_they_resemble():
    """Requests from a few templates with one slot changed ('I need a rental car in Rome tonight',
    'I need a hotel room in Rome tonight'): one-slot chains run across templates, so every dropped
    query must be within the threshold of its own representative (exact Jaccard; the MinHash
    estimate has an sd of ~0.04)."""
    cities = ["Paris", "Tokyo", "Berlin", "Chicago", "Lisbon", "Denver", "Rome", "Seoul"]
    days = ["tomorrow night", "next Friday", "on Monday", "this weekend", "on the 12th", "tonight"]
    templates = ["I need a rental car in {c} {d} please", "I need a hotel room in {c} {d} please",
                 "I need a flight to {c} {d} please", "what is the weather in {c} {d} please"]
    texts = [t.format(c=c, d=d) for t in templates for c in cities for d in days]
    result = dedupe(texts, **_defaults())
    assert result.counts()["near_duplicate"] > len(texts) // 2
    for i, k in enumerate(result.kept_by):
        if k != i:
            a, b = set(word_shingles(texts[i], 2)), set(word_shingles(texts[k], 2))
            assert len(a & b) / len(a | b) >= 0.4, (texts[i], texts[k])
