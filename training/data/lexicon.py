"""The wide emotion lexicon of the synthetic corpora and its held-out-vocabulary split.

Every class has 44 emotion words or short phrases (intensified ones such as "really glad", a
few negations such as "not happy at all") and there are 25 sentence frames. The labelled
corpus speaks only the ``labelled`` part: the 6 adjectives per class and 5 frames that the demo
corpus has always used (``training.data.synthetic.DEFAULT_ADJECTIVES`` / ``DEFAULT_TEMPLATES``).
The other words and frames are split once, by a fixed draw, into two disjoint halves:

- ``transfer``: never labelled, but spoken in the unlabelled transfer set, where only the
  teachers say what they mean (``training.stages.transfer``);
- ``novel``: never spoken in anything the student or the teachers train on: the test of
  whether the student hears the meaning of words nobody taught it.

The vocabulary probe (``training.stages.transfer.probe_sets``) speaks each part with voices
that no training corpus uses, so its words-only scores are speaker- and vocabulary-held-out.
Written for this project (no third-party word list, so nothing restricts redistribution).
"""

from __future__ import annotations

import random
import re

from training.data.synthetic import DEFAULT_ADJECTIVES, DEFAULT_TEMPLATES

PARTS = ("labelled", "transfer", "novel")
FUNCTION_WORDS = frozenset(
    "a about after all am and are at be been being but by for from get i in is it me my nor "
    "not of on or so the to up was with".split()
)
SPLIT_SEED = 20240907  # fixed: the split is part of the benchmark, not of a run

WORDS: dict[str, tuple[str, ...]] = {
    "neutral": (
        "informed", "aware", "certain", "clear", "told", "notified",
        "calm", "fine", "okay", "settled", "composed", "indifferent", "unmoved", "neutral",
        "level-headed", "matter-of-fact", "reasonably sure", "unbothered", "collected",
        "detached", "briefed", "updated", "advised", "reminded", "sure", "alright",
        "even-tempered", "not particularly moved", "neither glad nor upset", "steady",
        "relaxed about it", "unconcerned", "realistic", "practical", "objective",
        "quite normal", "composed enough", "at ease", "balanced", "prepared", "organised",
        "acquainted", "up to date", "on schedule",
    ),
    "happy": (
        "happy", "delighted", "thrilled", "excited", "glad", "overjoyed",
        "joyful", "cheerful", "ecstatic", "elated", "pleased", "grateful", "thankful",
        "so proud", "really glad", "absolutely thrilled", "over the moon", "on cloud nine",
        "jubilant", "blissful", "content", "hopeful", "optimistic", "merry", "gleeful",
        "tickled pink", "full of joy", "beaming", "radiant", "uplifted", "encouraged",
        "amused", "satisfied", "relieved and happy", "wonderful", "fantastic", "lucky",
        "blessed", "elated beyond words", "giddy", "buoyant", "jolly", "chuffed", "euphoric",
    ),
    "angry": (
        "angry", "furious", "outraged", "livid", "annoyed", "mad",
        "irritated", "enraged", "infuriated", "fuming", "irate", "incensed", "resentful",
        "seething", "exasperated", "indignant", "cross", "bitter", "hostile", "provoked",
        "really fed up", "absolutely furious", "sick and tired", "up in arms", "boiling mad",
        "disgusted", "offended", "aggravated", "agitated", "frustrated", "vexed", "riled",
        "heated", "raging", "wrathful", "fed up", "at boiling point", "not okay with it at all",
        "ready to explode", "betrayed", "insulted", "appalled", "sore", "galled",
    ),
    "sad": (
        "sad", "heartbroken", "miserable", "depressed", "gloomy", "devastated",
        "unhappy", "sorrowful", "downcast", "dejected", "despondent", "melancholy", "glum",
        "grieving", "mournful", "crushed", "hopeless", "lonely", "blue", "forlorn",
        "not happy at all", "really down", "deeply hurt", "in tears", "broken-hearted",
        "disheartened", "discouraged", "low", "sombre", "tearful", "wistful", "woeful",
        "disappointed", "hurt", "shattered", "inconsolable", "downhearted", "defeated",
        "regretful", "sorry", "empty inside", "not hopeful at all", "troubled", "weary",
    ),
}  # fmt: skip

# {adj}: the emotion word or phrase; {topic}; {pause}: the phrase boundary of the emotion's pause.
FRAMES: tuple[str, ...] = (
    *DEFAULT_TEMPLATES,
    "I have to say,{pause} I am {adj} about the {topic}.",
    "After the {topic},{pause} I felt {adj}.",
    "We are all {adj} about the {topic}.",
    "To be honest,{pause} the {topic} left me {adj}.",
    "She said she was {adj} about the {topic}.",
    "When I think about the {topic},{pause} I get {adj}.",
    "He seemed {adj} after the {topic}.",
    "Right now,{pause} I am {adj} about the {topic}.",
    "My family is {adj} about the {topic}.",
    "I was {adj} the moment I saw the {topic}.",
    "Believe me,{pause} I am {adj} about the {topic}.",
    "They said they were {adj} about the {topic}.",
    "The whole {topic}{pause} made everyone {adj}.",
    "Since yesterday,{pause} I have been {adj} about the {topic}.",
    "I never expected to be {adj} about the {topic}.",
    "Let me tell you,{pause} I am {adj}.",
    "All week,{pause} I felt {adj} about the {topic}.",
    "My friends are {adj} about the {topic}.",
    "Looking back,{pause} I was {adj} about the {topic}.",
    "It is the {topic}.{pause} I am {adj}.",
)
TOPICS: tuple[str, ...] = (
    "meeting", "results", "news", "weekend", "letter", "trip", "decision", "phone call",
)  # fmt: skip


def _halves(items: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    shuffled = sorted(items)
    rng.shuffle(shuffled)
    cut = (len(shuffled) + 1) // 2
    return sorted(shuffled[:cut]), sorted(shuffled[cut:])


def tokens(text: str) -> set[str]:
    """The content words of a word, phrase or sentence (lower case, no function words)."""
    return set(re.findall(r"[a-z]+", text.lower())) - FUNCTION_WORDS


def labelled_tokens() -> set[str]:
    """Every content word the labelled corpus's emotion words use."""
    return set().union(*(tokens(w) for words in DEFAULT_ADJECTIVES.values() for w in words))


def split() -> dict[str, dict]:
    """{part: {"words": {label: (words, ...)}, "frames": (frame, ...)}} for ``PARTS``. A phrase
    that shares a content word with a labelled or transfer word ("really glad", "not happy at
    all", "really fed up" beside "fed up") is never novel: it goes to the transfer part, so the
    novel part shares no emotion word with anything the student or its teachers train on."""
    rng = random.Random(SPLIT_SEED)
    known = labelled_tokens()
    transfer: dict[str, list[str]] = {}
    novel: dict[str, list[str]] = {}
    for label, words in WORDS.items():
        rest = [w for w in words if w not in DEFAULT_ADJECTIVES[label]]
        transfer[label], novel[label] = _halves([w for w in rest if not tokens(w) & known], rng)
        transfer[label] += [w for w in rest if tokens(w) & known]
    moved = True
    while moved:  # moving a phrase makes its words heard: repeat until nothing moves
        heard = known.union(*(tokens(w) for ws in transfer.values() for w in ws))
        moved = False
        for label in WORDS:
            leaking = [w for w in novel[label] if tokens(w) & heard]
            if leaking:
                moved = True
                transfer[label] += leaking
                novel[label] = [w for w in novel[label] if w not in leaking]
    transfer_frames, novel_frames = _halves([f for f in FRAMES if f not in DEFAULT_TEMPLATES], rng)
    return {
        "labelled": {
            "words": {label: tuple(DEFAULT_ADJECTIVES[label]) for label in WORDS},
            "frames": tuple(DEFAULT_TEMPLATES),
        },
        "transfer": {
            "words": {label: tuple(sorted(ws)) for label, ws in transfer.items()},
            "frames": tuple(transfer_frames),
        },
        "novel": {
            "words": {label: tuple(sorted(ws)) for label, ws in novel.items()},
            "frames": tuple(novel_frames),
        },
    }


def vocabulary(*names: str) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """(words by label, frames) of the union of the named parts, e.g. ``vocabulary("labelled",
    "transfer")`` for the transfer set."""
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown lexicon part(s) {unknown}; parts: {', '.join(PARTS)}")
    parts = split()
    words = {
        label: tuple(w for name in names for w in parts[name]["words"][label]) for label in WORDS
    }
    frames = tuple(f for name in names for f in parts[name]["frames"])
    return words, frames


def frame_words(frame: str) -> str:
    """A frame's own words, without its slots (for checks that no frame leaks)."""
    return re.sub(r"\{\w+\}", " ", frame)
