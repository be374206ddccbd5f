"""Generate the tiny built-in demo dataset (run: ``python -m tuneset.demo.generate``).

Why: the pipeline needs an offline demo that runs in seconds and whose answers
are known. The pool mixes a relevant slice (product-review sentiment in the
exact target template) with near-domain and unrelated sources, and every noisy
row (flipped labels, wrong answers, shuffled or truncated responses, duplicates,
test contamination) is recorded in ``truth.jsonl`` so selectors and filters can
be scored. All text is templated here from hand-written word lists; seeded, so
the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"

Row = dict[str, Any]

SENTIMENT_TEMPLATE = "Is the sentiment of this product review positive or negative?\nReview: {text}\nSentiment:"
TONE_TEMPLATE = "Rate the tone of this customer comment as good or bad.\nComment: {text}\nTone:"
CAPITAL_TEMPLATE = "What is the capital of {country}?\nAnswer:"
PLUS_TEMPLATE = "What is {a} plus {b}?\nAnswer:"

# ---------------------------------------------------------------- word lists

PRODUCTS = [
    "pair of headphones", "blender", "backpack", "desk lamp", "water bottle",
    "phone charger", "coffee maker", "keyboard", "pair of running shoes",
    "rice cooker", "umbrella", "toaster", "yoga mat", "electric kettle",
    "bike helmet", "phone case", "wireless mouse", "sleeping bag", "hair dryer",
    "smartwatch", "frying pan", "camping tent", "office chair", "suitcase",
]
WORDS: dict[bool, dict[str, list[str]]] = {
    True: {
        "adj": ["great", "excellent", "fantastic", "reliable", "wonderful",
                "well made", "impressive", "solid"],
        "clause": ["works exactly as described", "feels worth every penny",
                   "arrived quickly and well packed", "exceeded my expectations",
                   "is easy to use", "has held up perfectly",
                   "looks even better in person", "does everything I need"],
        "closing": ["Highly recommend it.", "I would buy it again.",
                    "Five stars from me.", "Very happy with this purchase.",
                    "My whole family loves it.", "Best purchase this year."],
    },
    False: {
        "adj": ["flimsy", "disappointing", "terrible", "useless", "poorly made",
                "awful", "unreliable", "overpriced"],
        "clause": ["broke after a week", "stopped working within days",
                   "feels like a waste of money", "arrived damaged and scratched",
                   "is hard to use", "fell apart quickly",
                   "looks nothing like the photos", "does not work as described"],
        "closing": ["Do not buy it.", "I want a refund.", "One star at most.",
                    "Very unhappy with this purchase.", "I regret buying it.",
                    "Returning it tomorrow."],
    },
}
REVIEW_TEMPLATES = [
    "This {product} is {adj} and {clause}.",
    "{Adj} {product}. It {clause}. {closing}",
    "I bought this {product} {when} and it {clause}. {closing}",
    "The {product} {clause}, and honestly it is {adj}. {closing}",
    "Ordered the {product} for {whom}. It {clause}. {closing}",
    "{closing} The {product} {clause}.",
]
WHEN = ["last month", "two weeks ago", "for my commute", "as a gift", "on sale"]
WHOM = ["my sister", "my office", "a camping trip", "my kitchen", "my son"]

VENUES: dict[str, list[str]] = {
    "hotel": ["the hotel", "the hostel", "the inn", "the resort", "the guesthouse"],
    "restaurant": ["the restaurant", "the cafe", "the pizza place", "the diner",
                   "the bistro", "the noodle bar"],
}
VENUE_BITS: dict[str, dict[bool, list[str]]] = {
    "hotel": {
        True: ["the room was spotless", "the bed was comfortable",
               "the view was lovely", "check-in took two minutes"],
        False: ["the room was dirty", "the bed was lumpy",
                "the noise kept us awake", "check-in took an hour"],
    },
    "restaurant": {
        True: ["the food was delicious", "the portions were generous",
               "the coffee was excellent", "our table was ready on time"],
        False: ["the food was cold", "the portions were tiny",
                "the coffee was bitter", "we waited an hour for a table"],
    },
}
SHARED_BITS: dict[bool, list[str]] = {
    True: ["the staff were friendly", "the service was quick"],
    False: ["the staff were rude", "the service was slow"],
}
VENUE_CLOSING: dict[bool, list[str]] = {
    True: ["We will be back.", "Lovely stay overall.", "Worth every cent."],
    False: ["Never again.", "Not worth the price.", "We left unhappy."],
}
COMMENT_TEMPLATES = [
    "We went to {place} {when} and {b1}.",
    "At {place}, {b1} and {b2}.",
    "{B1} and {b2} at {place}. {closing}",
    "{closing} At {place} {b1}.",
]
VENUE_WHEN = ["last weekend", "for a birthday", "on our trip", "after a long drive"]

COUNTRIES: list[tuple[str, str]] = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("the United Kingdom", "London"), ("Ireland", "Dublin"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Austria", "Vienna"),
    ("Switzerland", "Bern"), ("Poland", "Warsaw"), ("the Czech Republic", "Prague"),
    ("Hungary", "Budapest"), ("Greece", "Athens"), ("Sweden", "Stockholm"),
    ("Norway", "Oslo"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"),
    ("Iceland", "Reykjavik"), ("Russia", "Moscow"), ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Slovakia", "Bratislava"), ("Estonia", "Tallinn"),
    ("Latvia", "Riga"), ("Lithuania", "Vilnius"), ("Turkey", "Ankara"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"),
    ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"), ("Morocco", "Rabat"),
    ("Algeria", "Algiers"), ("Tunisia", "Tunis"), ("Senegal", "Dakar"),
    ("Uganda", "Kampala"), ("Zimbabwe", "Harare"), ("Zambia", "Lusaka"),
    ("Angola", "Luanda"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("South Korea", "Seoul"), ("India", "New Delhi"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("Malaysia", "Kuala Lumpur"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Jordan", "Amman"), ("Lebanon", "Beirut"),
    ("Syria", "Damascus"), ("Afghanistan", "Kabul"), ("Mongolia", "Ulaanbaatar"),
    ("Qatar", "Doha"), ("Oman", "Muscat"), ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"), ("Cuba", "Havana"), ("Jamaica", "Kingston"),
    ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Peru", "Lima"),
    ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"), ("Brazil", "Brasilia"), ("Australia", "Canberra"),
    ("New Zealand", "Wellington"), ("Cambodia", "Phnom Penh"), ("Armenia", "Yerevan"),
    ("Georgia", "Tbilisi"), ("Azerbaijan", "Baku"), ("Belarus", "Minsk"),
    ("Albania", "Tirana"), ("Cyprus", "Nicosia"), ("Malta", "Valletta"),
    ("Rwanda", "Kigali"), ("Libya", "Tripoli"), ("Nicaragua", "Managua"),
    ("Guatemala", "Guatemala City"),
]

CHITCHAT: list[tuple[str, str]] = (
    [(f"Give a synonym for {w}.", s.capitalize()) for w, s in [
        ("happy", "joyful"), ("big", "large"), ("fast", "quick"), ("small", "tiny"),
        ("smart", "clever"), ("angry", "furious"), ("begin", "start"),
        ("tired", "sleepy"), ("rich", "wealthy"), ("cold", "chilly"),
        ("easy", "simple"), ("quiet", "silent"), ("brave", "courageous"),
        ("funny", "amusing")]]
    + [(f"Give the opposite of {w}.", o.capitalize()) for w, o in [
        ("hot", "cold"), ("up", "down"), ("early", "late"), ("full", "empty"),
        ("light", "dark"), ("open", "closed"), ("young", "old"), ("win", "lose"),
        ("strong", "weak"), ("wet", "dry")]]
    + [(f"Name {c}.", a) for c, a in [
        ("a color of the sky at sunset", "Orange"), ("a fruit that is yellow", "Banana"),
        ("an animal that lives in the ocean", "Dolphin"),
        ("a planet in our solar system", "Mars"),
        ("a musical instrument with strings", "Guitar"), ("a season of the year", "Autumn"),
        ("a vegetable that is orange", "Carrot"), ("a bird that cannot fly", "Penguin"),
        ("a tool for cutting paper", "Scissors"), ("a primary color", "Blue")]]
    + [(f"Write a one-sentence tip for {g}.", t) for g, t in [
        ("staying focused", "Put your phone in another room and work in short timed blocks."),
        ("sleeping better", "Go to bed at the same time every night and keep screens out of the bedroom."),
        ("saving money", "Set aside a fixed amount on payday before you spend anything else."),
        ("learning a language", "Practice for ten minutes every day instead of for hours once a week."),
        ("keeping a plant alive", "Check the soil with your finger and water only when it feels dry."),
        ("writing clearly", "Use short sentences and cut every word that does not add meaning."),
        ("staying hydrated", "Keep a filled water bottle on your desk where you can see it."),
        ("a job interview", "Prepare two short stories that show how you solved a real problem."),
        ("cooking pasta", "Salt the boiling water well and taste the pasta a minute before the timer."),
        ("running a meeting", "Share a short agenda beforehand and end with clear next steps.")]]
    + [(f"Explain in one sentence why {x}.", e) for x, e in [
        ("people drink water", "Water keeps the body hydrated and helps every organ work properly."),
        ("the sky looks blue", "Air scatters blue sunlight more than other colors, so blue reaches our eyes from all directions."),
        ("we wash our hands", "Washing removes germs that could otherwise make us or others sick."),
        ("leaves fall in autumn", "Trees drop their leaves to save water and energy during the cold months."),
        ("exercise is healthy", "Regular exercise strengthens the heart, muscles and mood."),
        ("bread goes stale", "Bread loses moisture and its starch hardens as it sits out."),
        ("we wear seat belts", "Seat belts hold us in place and reduce injuries in a crash."),
        ("ice floats on water", "Ice is less dense than liquid water, so it rises to the top.")]]
)

# ----------------------------------------------------------------- builders


def _fill(template: str, words: dict[str, str]) -> str:
    """Format a template; ``{Key}`` fields get the capitalised ``key`` value."""
    caps = {k.capitalize(): v[:1].upper() + v[1:] for k, v in words.items()}
    return template.format(**words, **caps)


def make_review(rng: random.Random, positive: bool) -> str:
    """One product review of 8-25 words whose sentiment is clear from its words."""
    while True:
        w = WORDS[positive]
        words = {"product": rng.choice(PRODUCTS), "adj": rng.choice(w["adj"]),
                 "clause": rng.choice(w["clause"]), "closing": rng.choice(w["closing"]),
                 "when": rng.choice(WHEN), "whom": rng.choice(WHOM)}
        text = _fill(rng.choice(REVIEW_TEMPLATES), words)
        if 8 <= len(text.split()) <= 25:
            return text


def unique_reviews(rng: random.Random, n: int, seen: set[str]) -> list[tuple[str, str]]:
    """``n`` (text, label) pairs, half positive, none already in ``seen`` (updated)."""
    out: list[tuple[str, str]] = []
    for i in range(n):
        positive = i % 2 == 0
        text = make_review(rng, positive)
        while text in seen:
            text = make_review(rng, positive)
        seen.add(text)
        out.append((text, "positive" if positive else "negative"))
    rng.shuffle(out)
    return out


def make_comment(rng: random.Random, good: bool) -> str:
    """One restaurant or hotel comment (the near-domain distractor)."""
    kind = rng.choice(sorted(VENUES))
    b1, b2 = rng.sample(VENUE_BITS[kind][good] + SHARED_BITS[good], 2)
    words = {"place": rng.choice(VENUES[kind]), "b1": b1, "b2": b2,
             "when": rng.choice(VENUE_WHEN), "closing": rng.choice(VENUE_CLOSING[good])}
    return _fill(rng.choice(COMMENT_TEMPLATES), words)


def row(source: str, instruction: str, response: str) -> Row:
    """A pool row before ids are assigned; truth fields start clean."""
    return {"source": source, "instruction": instruction, "response": response,
            "noise": None, "clean_response": None, "duplicate_of": None}


def corrupt(rows: list[Row], idx: list[int], noise: str, new_response: list[str]) -> None:
    """Replace responses of ``rows[i]`` for ``i`` in ``idx`` and record the noise."""
    for i, resp in zip(idx, new_response):
        r = rows[i]
        r["noise"], r["clean_response"], r["response"] = noise, r["response"], resp


def review_rows(rng: random.Random, reviews: list[tuple[str, str]], n_flip: int) -> list[Row]:
    """The relevant slice: target-template reviews, ``n_flip`` with the wrong label."""
    rows = [row("reviews", SENTIMENT_TEMPLATE.format(text=t), y) for t, y in reviews]
    flip = rng.sample(range(len(rows)), n_flip)
    other = {"positive": "negative", "negative": "positive"}
    corrupt(rows, flip, "label_flip", [other[rows[i]["response"]] for i in flip])
    return rows


def review_other_rows(rng: random.Random, n: int) -> list[Row]:
    """Near-domain distractor: venue comments in a different template, no noise."""
    seen: set[str] = set()
    rows: list[Row] = []
    while len(rows) < n:
        good = len(rows) % 2 == 0
        text = make_comment(rng, good)
        if text not in seen:
            seen.add(text)
            rows.append(row("reviews_other", TONE_TEMPLATE.format(text=text),
                            "good" if good else "bad"))
    return rows


def capital_rows(rng: random.Random, pairs: list[tuple[str, str]], n_wrong: int) -> list[Row]:
    """One question per country; ``n_wrong`` answered with another country's capital."""
    rows = [row("capitals", CAPITAL_TEMPLATE.format(country=c), city) for c, city in pairs]
    wrong = rng.sample(range(len(rows)), n_wrong)
    cities = [city for _, city in pairs]
    corrupt(rows, wrong, "wrong_answer",
            [rng.choice([c for c in cities if c != rows[i]["response"]]) for i in wrong])
    return rows


def arithmetic_rows(rng: random.Random, n: int, n_wrong: int) -> list[Row]:
    """Distinct ``a plus b`` questions (1..50); ``n_wrong`` answers are off by a little."""
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n:
        ab = (rng.randint(1, 50), rng.randint(1, 50))
        if ab not in pairs:
            pairs.append(ab)
    rows = [row("arithmetic", PLUS_TEMPLATE.format(a=a, b=b), str(a + b)) for a, b in pairs]
    wrong = rng.sample(range(n), n_wrong)
    corrupt(rows, wrong, "wrong_answer",
            [str(int(rows[i]["response"]) + rng.choice([-10, -2, -1, 1, 2, 10])) for i in wrong])
    return rows


def chitchat_rows(rng: random.Random, n: int, n_shuffle: int, n_trunc: int) -> list[Row]:
    """General instructions; some get another row's response, some are cut to 2 words."""
    rows = [row("chitchat", q, a) for q, a in rng.sample(CHITCHAT, n)]
    long_rows = [i for i, r in enumerate(rows) if len(r["response"].split()) >= 4]
    trunc = rng.sample(long_rows, n_trunc)
    rest = [i for i in range(n) if i not in trunc]
    shuf = rng.sample(rest, n_shuffle)
    responses = [r["response"] for r in rows]
    corrupt(rows, shuf, "shuffled_response",
            [rng.choice([s for s in responses if s != rows[i]["response"]]) for i in shuf])
    corrupt(rows, trunc, "truncated",
            [" ".join(rows[i]["response"].split()[:2]) for i in trunc])
    return rows


def capital_targets(pairs: list[tuple[str, str]], split: str) -> list[Row]:
    return [{"id": f"capitals-{split}-{i}", "instruction": CAPITAL_TEMPLATE.format(country=c),
             "response": city} for i, (c, city) in enumerate(pairs)]


def sentiment_targets(reviews: list[tuple[str, str]], split: str) -> list[Row]:
    return [{"id": f"sentiment-{split}-{i}", "instruction": SENTIMENT_TEMPLATE.format(text=t),
             "response": y} for i, (t, y) in enumerate(reviews)]


def build_pool(rng: random.Random, base: list[Row], test: list[Row],
               n_dup: int, n_contam: int) -> tuple[list[Row], list[Row]]:
    """Add duplicates and contamination, shuffle, assign ids; return (pool, truth)."""
    for i, r in enumerate(base):
        r["key"] = i
    clean = [r for r in base if r["noise"] is None]
    extra = [dict(r, noise="duplicate", duplicate_of=r["key"], key=None)
             for r in rng.sample(clean, n_dup)]
    extra += [dict(row("reviews", t["instruction"], t["response"]), noise="contaminated")
              for t in rng.sample(test, n_contam)]
    rows = base + extra
    rng.shuffle(rows)
    ids = {r["key"]: f"d{n:04d}" for n, r in enumerate(rows, 1) if r.get("key") is not None}
    pool, truth = [], []
    for n, r in enumerate(rows, 1):
        rid = f"d{n:04d}"
        pool.append({"id": rid, "source": r["source"], "instruction": r["instruction"],
                     "response": r["response"]})
        dup = ids[r["duplicate_of"]] if r["duplicate_of"] is not None else None
        truth.append({"id": rid, "noise": r["noise"], "clean_response": r["clean_response"],
                      "duplicate_of": dup})
    return pool, truth


TASKS: dict[str, dict[str, Any]] = {
    "sentiment": {
        "metric": "choice_accuracy",
        "about": "Classify a short product review as positive or negative; "
                 "the pool's 'reviews' source uses the exact same template.",
        "choices": ["negative", "positive"],
        "dev": "targets/sentiment/dev.jsonl",
        "test": "targets/sentiment/test.jsonl",
    },
    "capitals": {
        "metric": "exact_match",
        "about": "Name the capital city of a country; test countries never "
                 "appear in the pool, so only the answer format can be learned.",
        "dev": "targets/capitals/dev.jsonl",
        "test": "targets/capitals/test.jsonl",
    },
}

# ------------------------------------------------------------------ writing


def write_jsonl(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def check_no_leak(pool: list[Row], targets: list[Row], allowed: int) -> None:
    """Only the deliberate contaminations may share an instruction with a target row."""
    held = {t["instruction"] for t in targets}
    leaks = sum(r["instruction"] in held for r in pool)
    if leaks != allowed:
        raise AssertionError(f"{leaks} pool rows match target instructions, expected {allowed}")


def generate(out_dir: Path = DATA_DIR) -> None:
    rng = random.Random(0)
    seen: set[str] = set()
    pool_reviews = unique_reviews(rng, 110, seen)
    sent_dev = sentiment_targets(unique_reviews(rng, 16, seen), "dev")
    sent_test = sentiment_targets(unique_reviews(rng, 80, seen), "test")

    countries = COUNTRIES[:]
    rng.shuffle(countries)
    cap_test, cap_dev, cap_pool = countries[:30], countries[30:38], countries[38:88]
    base = (review_rows(rng, pool_reviews, n_flip=16)
            + review_other_rows(rng, 44)
            + capital_rows(rng, cap_pool, n_wrong=5)
            + arithmetic_rows(rng, 50, n_wrong=5)
            + chitchat_rows(rng, 50, n_shuffle=4, n_trunc=3))
    pool, truth = build_pool(rng, base, sent_test, n_dup=10, n_contam=4)

    targets = {"sentiment": (sent_dev, sent_test),
               "capitals": (capital_targets(cap_dev, "dev"), capital_targets(cap_test, "test"))}
    check_no_leak(pool, [t for dev, test in targets.values() for t in dev + test], allowed=4)

    write_jsonl(out_dir / "pool.jsonl", pool)
    write_jsonl(out_dir / "truth.jsonl", truth)
    for name, (dev, test) in targets.items():
        write_jsonl(out_dir / "targets" / name / "dev.jsonl", dev)
        write_jsonl(out_dir / "targets" / name / "test.jsonl", test)
    (out_dir / "tasks.json").write_text(json.dumps(TASKS, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    generate()
    print(f"wrote demo data to {DATA_DIR}")
