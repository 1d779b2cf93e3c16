"""Short texts with ground truth for bench/dedupe.py: social posts, search queries, one-line reviews.

Every text has fewer than 8 words (the default ``dedupe.min_words``). Originals are drawn from
templates whose slots differ by one content word, emoticon or emoji, so most originals have close
neighbours that mean something else ("@user :'(" / "@user :)", "weather in oslo today" / "weather
in oslo tomorrow", "c++ tutorial" / "c# tutorial"): the pairs a short-text dedupe must keep apart.
The ground truth is the filled template (the slot values), never this project's tokenizer.

Planted duplicates of an original:
  exact - the same text in other case and whitespace;
  near  - the same words with other punctuation ("Cheap flights to Paris?", "great phone!!").
"""
from __future__ import annotations

import random

EMOTICONS = [":)", ":(", ":'(", ":D", ";)", ":P", "<3", ":/", ":-)", ":-(", ":|", ":o", "^_^", ":))"]
EMOJI = ["😍", "😡", "😢", "😂", "👍", "👎", "🔥", "🎉", "😴", "🙏", "❤️", "💔", "👩‍💻", "👍🏽"]
FEELINGS = ["so tired", "so happy", "bored", "excited", "sad", "angry", "in love", "stressed", "relaxed", "sick",
            "hungry", "done"]
REACTIONS = ["yes", "no", "thanks", "lol", "omg", "wow", "same", "nope", "agreed", "congrats", "ugh", "finally"]
CITIES = ["paris", "rome", "oslo", "lima", "cairo", "tokyo", "berlin", "madrid", "lisbon", "vienna", "dublin",
          "prague", "athens", "boston", "denver", "austin", "seattle", "chicago", "toronto", "sydney", "delhi",
          "mumbai", "seoul", "bangkok", "hanoi", "nairobi", "lagos", "quito", "bogota", "havana"]
DAYS = ["today", "tomorrow", "this weekend", "next week", "on monday", "on friday"]
FOODS = ["pizza", "sushi", "tacos", "ramen", "burgers", "curry", "pho", "dumplings", "bagels", "falafel",
         "kebab", "noodles", "brunch", "coffee", "ice cream"]
VERBS = ["reset", "clean", "fix", "update", "charge", "unlock", "replace", "install", "paint", "sell"]
OBJECTS = ["iphone 12", "iphone 13", "laptop", "router", "printer", "bike chain", "kitchen sink", "car battery",
           "smart tv", "kindle", "ps5 controller", "garage door"]
PRODUCTS = ["phone", "laptop", "blender", "kettle", "headphones", "mattress", "charger", "backpack", "toaster",
            "camera", "vacuum", "monitor", "keyboard", "watch", "speaker", "tent"]
LANGUAGES = ["c", "c++", "c#", "f#", "python", "java", "rust", "go", "ruby", "kotlin"]
TOPICS = ["tutorial", "interview questions", "cheat sheet", "for beginners", "jobs", "compiler"]
GOOD = ["great", "good", "solid", "decent", "excellent", "cheap", "sturdy", "quiet"]
BAD = ["awful", "bad", "weak", "poor", "flimsy", "loud", "slow", "useless"]
PARTS = ["battery", "screen", "sound", "price", "build", "design", "motor", "cable", "lid", "straps"]
TIMES = ["two days", "a week", "a month", "three months", "a year", "one use"]


def _templates(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """(source, slot values) of one randomly filled template: a source first (a third each), then
    one of its templates. The text is the slots in order."""
    pick = rng.choice
    posts = [
        lambda: ("@user", pick(EMOTICONS)),
        lambda: ("@user", pick(REACTIONS), pick(EMOTICONS)),
        lambda: ("@user", pick(FEELINGS), pick(EMOJI)),
        lambda: (pick(FEELINGS), "today", pick(EMOJI)),
        lambda: (pick(FEELINGS), pick(EMOTICONS), pick(EMOJI)),
        lambda: (pick(REACTIONS), pick(EMOJI), pick(EMOJI)),
        lambda: (pick(REACTIONS), pick(EMOTICONS), pick(EMOTICONS)),
    ]
    queries = [
        lambda: ("cheap flights to", pick(CITIES)),
        lambda: ("flights from", pick(CITIES), "to", pick(CITIES), pick(DAYS)),
        lambda: ("weather in", pick(CITIES), pick(DAYS)),
        lambda: ("hotels in", pick(CITIES), pick(DAYS)),
        lambda: ("best", pick(FOODS), "in", pick(CITIES)),
        lambda: (pick(PRODUCTS), "repair in", pick(CITIES)),
        lambda: ("how to", pick(VERBS), pick(OBJECTS)),
        lambda: (pick(LANGUAGES), pick(TOPICS)),
    ]
    reviews = [
        lambda: (pick(GOOD), pick(PRODUCTS), ",", pick(BAD), pick(PARTS), "."),
        lambda: (pick(PRODUCTS), "broke after", pick(TIMES), "."),
        lambda: (pick(PRODUCTS), "works", pick(["great", "fine", "badly"]), pick(EMOTICONS)),
        lambda: (pick(["love", "hate", "returned"]), "this", pick(PRODUCTS), pick(EMOJI)),
    ]
    source, options = pick((("post", posts), ("query", queries), ("review", reviews)))
    return source, pick(options)()


def _render(slots: tuple[str, ...]) -> str:
    return " ".join(slots).replace(" ,", ",").replace(" .", ".")


def exact_copy(rng: random.Random, text: str) -> str:
    """Other case and whitespace only."""
    out = []
    for tok in text.split(" "):
        r = rng.random()
        tok = tok.upper() if r < 0.3 else tok.title() if r < 0.5 else tok
        out.append(tok + rng.choice((" ", "  ", "\t")))
    return rng.choice(("", " ")) + "".join(out).rstrip() + rng.choice(("", "\n"))


def punctuation_copy(rng: random.Random, slots: tuple[str, ...]) -> str:
    """The same words (and emoticons, emoji) with commas, full stops, ! and ? moved, added or dropped."""
    words = [s for s in slots if s not in (",", ".")]
    text = " ".join(w + (rng.choice((",", "", "")) if i < len(words) - 1 else "") for i, w in enumerate(words))
    text += rng.choice(("!", "!!", "?", "...", " !", ".", ""))
    if text == _render(slots):  # no punctuation changed: make sure one did
        text += "!!"
    return text.capitalize() if rng.random() < 0.5 else text


def make_short_records(n: int, seed: int = 1, exact_share: float = 0.08, near_share: float = 0.12,
                       group_offset: int = 0):
    """``n`` short texts with (group, kind, source) per record: kind is original | exact | near; source is
    post | query | review. Groups are numbered from ``group_offset`` (to follow the long texts')."""
    rng = random.Random(seed)
    n_exact, n_near = int(n * exact_share), int(n * near_share)
    originals: dict[tuple[str, ...], str] = {}
    attempts = 0
    while len(originals) < n - n_exact - n_near and attempts < 20 * n:
        source, slots = _templates(rng)
        originals.setdefault(slots, source)
        attempts += 1
    slots_list = list(originals)
    rows = [(_render(s), group_offset + g, "original", originals[s]) for g, s in enumerate(slots_list)]
    for k in range(n - len(rows)):
        g = rng.randrange(len(slots_list))
        text = exact_copy(rng, rows[g][0]) if k < n_exact else punctuation_copy(rng, slots_list[g])
        rows.append((text, group_offset + g, "exact" if k < n_exact else "near", originals[slots_list[g]]))
    rng.shuffle(rows)
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
