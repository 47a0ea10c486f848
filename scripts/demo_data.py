"""Deterministic synthetic task data for the demo adapters (no downloads).

    python scripts/demo_data.py [--out datasets] [--train 300] [--heldout 60]

Writes, for each task, `<out>/<task>/train.jsonl` and `<out>/<task>/heldout.jsonl` (one
`{"input": ..., "target": ...}` per line) and `<out>/<task>/prompt.json`: the completion template
the adapter is trained and served with (contains `{input}`; the target follows it after one
space), the eval metric and a token budget for generation.

- sentiment: a short product/service review → `positive` | `negative` | `neutral`. Reviews mix
  an optional neutral aside with one or two judgement clauses; with "but" the last clause wins.
- summarize: a four-sentence local news passage → a one-sentence summary of who did what,
  where and when (the other sentences are distractors).
- qa: a context of four or five facts about a fictional person + a question → the answer span,
  copied from the context.

Every example comes from templates and word lists in this file and one seeded RNG per task,
so the files are byte-for-byte reproducible. Held-out examples are distinct from training
examples; held-out reviews use some phrasings and held-out QA/summaries some names that
training never shows.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20240611

PROMPTS: dict[str, dict[str, object]] = {
    "sentiment": {
        "completion": "Review: {input}\nSentiment (positive, negative or neutral):",
        "metric": "exact_match",
        "max_tokens": 4,
    },
    "summarize": {
        "completion": "Passage: {input}\nOne-sentence summary:",
        "metric": "rouge_l",
        "max_tokens": 40,
    },
    "qa": {
        "completion": "{input}\nAnswer:",
        "metric": "token_f1",
        "max_tokens": 12,
    },
}

# --- sentiment ---------------------------------------------------------------------------

SUBJECTS = [
    "the hotel room",
    "this laptop",
    "the pasta",
    "the customer service",
    "the delivery",
    "this phone case",
    "the movie",
    "the concert",
    "the coffee maker",
    "the hiking boots",
    "the checkout process",
    "this novel",
    "the rental car",
    "the vacuum cleaner",
    "the app",
    "the haircut",
    "the museum tour",
    "the headphones",
    "the pizza",
    "the train ride",
    "the yoga class",
    "the sofa",
    "the tent",
    "the dentist visit",
    "the blender",
]
POSITIVE = [
    "was absolutely wonderful",
    "exceeded my expectations",
    "works perfectly",
    "was a real pleasure",
    "is worth every penny",
    "made my whole week",
    "was fantastic from start to finish",
    "is the best I have ever had",
    "was friendly and fast",
    "feels sturdy and well made",
    "was delicious",
    "is a joy to use",
    "was excellent",
    "left me very happy",
    "was a great surprise",
    "impressed the whole family",
    "runs smoothly and quietly",
    "was beautifully done",
]
NEGATIVE = [
    "was a complete disappointment",
    "broke after two days",
    "was cold and bland",
    "is a waste of money",
    "was rude and slow",
    "stopped working within a week",
    "was the worst I have ever had",
    "feels cheap and flimsy",
    "was a total mess",
    "made me regret buying it",
    "was far too noisy",
    "left me very angry",
    "arrived damaged",
    "was overpriced and dirty",
    "kept crashing",
    "was painfully boring",
    "smelled awful",
    "ruined my evening",
]
NEUTRAL = [
    "arrived on Tuesday",
    "comes in three colors",
    "was about what I expected",
    "is neither great nor terrible",
    "was delivered in a brown box",
    "has a blue label",
    "took about an hour",
    "is the standard model",
    "was fine, nothing special",
    "is average in every way",
    "was okay",
    "weighs around two kilos",
    "was exactly as described",
    "is sold in most shops",
    "has a manual in four languages",
    "was ordered last month",
    "is a mid-range option",
    "opens at nine",
]
ASIDES = [
    "",
    "",
    "",
    "I bought it last week. ",
    "My sister recommended it. ",
    "We tried it on a Sunday. ",
    "This was my second time. ",
    "I used it for a month. ",
]
# Phrasings only the held-out split uses (the model has to generalise to them).
HELDOUT_ONLY = {
    "positive": {"was a great surprise", "impressed the whole family", "runs smoothly and quietly"},
    "negative": {"smelled awful", "ruined my evening", "kept crashing"},
    "neutral": {"has a manual in four languages", "was ordered last month", "opens at nine"},
}
LABEL_PHRASES = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}


def _phrase(rng: random.Random, label: str, heldout: bool) -> str:
    pool = [p for p in LABEL_PHRASES[label] if heldout or p not in HELDOUT_ONLY[label]]
    return rng.choice(pool)


def sentiment_example(rng: random.Random, heldout: bool) -> dict[str, str]:
    label = rng.choice(["positive", "negative", "neutral"])
    subject = rng.choice(SUBJECTS)
    aside = rng.choice(ASIDES)
    if rng.random() < 0.35:  # contrast: an earlier clause of another polarity, then "but"
        other = rng.choice([x for x in ("positive", "negative") if x != label])
        first = f"{subject} {_phrase(rng, other, heldout)}"
        text = f"{aside}{first[0].upper()}{first[1:]}, but {rng.choice(SUBJECTS)} "
        text += f"{_phrase(rng, label, heldout)}."
    else:
        clause = f"{subject} {_phrase(rng, label, heldout)}"
        text = f"{aside}{clause[0].upper()}{clause[1:]}."
    return {"input": text, "target": label}


# --- summarize ---------------------------------------------------------------------------

FIRST_NAMES = [
    "Mara",
    "Tobias",
    "Lena",
    "Arjun",
    "Sofia",
    "Kwame",
    "Ingrid",
    "Mateo",
    "Yuki",
    "Omar",
    "Clara",
    "Henrik",
    "Amara",
    "Felix",
    "Nadia",
    "Ravi",
    "Elsa",
    "Diego",
    "Hana",
    "Jonas",
]
LAST_NAMES = [
    "Lind",
    "Okafor",
    "Brandt",
    "Rossi",
    "Tanaka",
    "Novak",
    "Silva",
    "Haddad",
    "Berg",
    "Moreau",
    "Kowalski",
    "Reyes",
    "Larsen",
    "Costa",
    "Ibrahim",
    "Fischer",
    "Nakamura",
    "Dubois",
]
HELDOUT_FIRST = ["Greta", "Idris", "Paloma", "Soren"]
ROLES = [
    "retired teacher",
    "local baker",
    "young engineer",
    "nurse",
    "bus driver",
    "student",
    "librarian",
    "carpenter",
    "city councillor",
    "fisherman",
    "painter",
    "farmer",
]
TOWNS = [
    "Millbrook",
    "Harlow",
    "Eastport",
    "Kingsbridge",
    "Ashford",
    "Redwater",
    "Lakeside",
    "Stonebury",
    "Fairhaven",
    "Northfield",
    "Oakridge",
    "Westmere",
]
EVENTS = [
    "opened a new bakery",
    "won the city marathon",
    "repaired the old stone bridge",
    "published a cookbook",
    "rescued a dog from the river",
    "planted two hundred trees",
    "started a free chess club",
    "raised money for the hospital",
    "painted a mural",
    "built a playground",
    "organised a music festival",
    "found a rare coin",
]
DAYS = ["on Monday", "on Tuesday", "on Friday", "on Saturday", "last week", "last spring"]
DISTRACTORS = [
    "The weather was mild and sunny.",
    "Many neighbours stopped by to watch.",
    "Local shops reported a busy afternoon.",
    "The mayor was travelling at the time.",
    "A small crowd gathered near the square.",
    "It had rained heavily the night before.",
    "Several children asked for photographs.",
    "The town hall clock was being repaired.",
    "Traffic on the main road was light.",
    "A reporter from the county paper attended.",
]


def summarize_example(rng: random.Random, heldout: bool) -> dict[str, str]:
    first = rng.choice(HELDOUT_FIRST if heldout and rng.random() < 0.5 else FIRST_NAMES)
    name = f"{first} {rng.choice(LAST_NAMES)}"
    role, town, event, day = (rng.choice(x) for x in (ROLES, TOWNS, EVENTS, DAYS))
    years = rng.randint(3, 40)
    d1, d2 = rng.sample(DISTRACTORS, 2)
    sentences = [
        f"{name}, a {role}, has lived in {town} for {years} years.",
        f"{day[0].upper()}{day[1:]}, {first} {event} in the town centre.",
        d1,
        d2,
    ]
    if rng.random() < 0.5:  # the key sentence is not always second
        sentences[1], sentences[2] = sentences[2], sentences[1]
    summary = f"{name}, a {role}, {event} in {town} {day}."
    return {"input": " ".join(sentences), "target": summary}


# --- qa ----------------------------------------------------------------------------------

CITIES = [
    "Lisbon",
    "Krakow",
    "Nairobi",
    "Osaka",
    "Quito",
    "Tallinn",
    "Porto",
    "Adelaide",
    "Bergen",
    "Tunis",
    "Cork",
    "Montreal",
    "Valencia",
    "Leipzig",
]
JOBS = [
    "pilot",
    "architect",
    "chemist",
    "chef",
    "journalist",
    "veterinarian",
    "translator",
    "electrician",
    "pharmacist",
    "photographer",
    "surveyor",
    "violinist",
]
COMPANIES = [
    "Northwind Labs",
    "Bluefin Foods",
    "Crestline Media",
    "Ironwood Studios",
    "Solace Health",
    "Brightpath Energy",
    "Copperleaf Bank",
    "Harbor & Finch",
    "Maple Street Clinic",
]
PETS = ["Biscuit", "Pepper", "Ziggy", "Luna", "Mochi", "Rufus", "Olive", "Comet", "Juniper"]
HOBBIES = [
    "rock climbing",
    "bird watching",
    "sailing",
    "pottery",
    "chess",
    "gardening",
    "long-distance cycling",
    "baking bread",
    "playing the cello",
    "salsa dancing",
]


def qa_example(rng: random.Random, heldout: bool) -> dict[str, str]:
    first = rng.choice(HELDOUT_FIRST if heldout and rng.random() < 0.5 else FIRST_NAMES)
    name = f"{first} {rng.choice(LAST_NAMES)}"
    pronoun = rng.choice(["He", "She"])
    possessive = "His" if pronoun == "He" else "Her"
    city, job, company, pet, hobby = (
        rng.choice(x) for x in (CITIES, JOBS, COMPANIES, PETS, HOBBIES)
    )
    year = str(rng.randint(1950, 2004))
    facts = [
        f"{name} was born in {city} in {year}.",
        f"{pronoun} works as a {job} at {company}.",
        f"{possessive} dog is called {pet}.",
        f"On weekends {first} enjoys {hobby}.",
    ]
    questions = [
        (f"Where was {name} born?", city),
        (f"In what year was {name} born?", year),
        (f"What is {name}'s job?", job),
        (f"Which company does {name} work for?", company),
        (f"What is the name of {first}'s dog?", pet),
        (f"What does {first} enjoy on weekends?", hobby),
    ]
    rest = facts[1:]  # the name comes first, so later pronouns have a referent
    rng.shuffle(rest)
    facts = facts[:1] + rest
    if rng.random() < 0.5:  # a distractor fact about someone else
        other_first = rng.choice([n for n in FIRST_NAMES if n != first])
        other = f"{other_first} {rng.choice(LAST_NAMES)}"
        facts.insert(rng.randint(1, len(facts)), f"{other} lives in {rng.choice(CITIES)}.")
    question, answer = rng.choice(questions)
    context = " ".join(facts)
    return {"input": f"Context: {context}\nQuestion: {question}", "target": answer}


TASKS: dict[str, Callable[[random.Random, bool], dict[str, str]]] = {
    "sentiment": sentiment_example,
    "summarize": summarize_example,
    "qa": qa_example,
}


def generate(task: str, n_train: int, n_heldout: int) -> dict[str, list[dict[str, str]]]:
    """Unique examples per split; no held-out input appears in training."""
    rng = random.Random(f"{SEED}-{task}")
    make = TASKS[task]
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {"train": [], "heldout": []}
    for split, count in (("train", n_train), ("heldout", n_heldout)):
        while len(splits[split]) < count:
            example = make(rng, split == "heldout")
            if example["input"] not in seen:
                seen.add(example["input"])
                splits[split].append(example)
    return splits


def write(out: Path, n_train: int, n_heldout: int) -> None:
    for task in TASKS:
        directory = out / task
        directory.mkdir(parents=True, exist_ok=True)
        for split, examples in generate(task, n_train, n_heldout).items():
            lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
            (directory / f"{split}.jsonl").write_text(lines)
        (directory / "prompt.json").write_text(json.dumps(PROMPTS[task], indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "datasets")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--heldout", type=int, default=60)
    args = parser.parse_args()
    write(args.out, args.train, args.heldout)
    print(f"wrote {', '.join(TASKS)} to {args.out}")


if __name__ == "__main__":
    main()
