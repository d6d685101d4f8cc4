"""The built-in corpus: English-like stories from a small seeded grammar, generated in code, no download.

It exists so that every text recipe and test runs with no data file. The grammar is chosen so a tiny
character-level model learns something measurable within a minute on a CPU, yet cannot drive the loss to
zero at once:

- spelling and punctuation (a small fixed vocabulary of words) -- learnt first;
- agreement: a singular subject takes "sleeps", a plural one "sleep"; a name's pronoun ("she"/"he") is
  fixed for the whole corpus and recurs sentences later;
- counting in words ("three, four, five") and sums ("had 4 apples, found 7 more, has 11"), whose
  continuations are deterministic once the pattern is recognised;
- copying: "found the key there" repeats the key asked about earlier in the sentence, which n-gram
  statistics over a few characters cannot predict but a model that attends back can;
- two-digit sums with carries ("16 plus 19" is "35"), learnt slowly, so longer training keeps paying off;
- and free choices (which name, which animal, which place) that keep an irreducible entropy per sentence.

The text is produced by a self-contained SplitMix64 generator rather than `random`, so it is the same on every
Python version and platform. `builtin_corpus()` is exactly BUILTIN_SIZE ASCII characters with BUILTIN_VOCAB
distinct characters (tests check both).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

BUILTIN_SIZE = 300_000
"""Characters (= bytes: the corpus is ASCII) in `builtin_corpus()`."""
BUILTIN_VOCAB = 63
"""Distinct characters in `builtin_corpus()`: the char tokenizer's vocabulary size."""

_MASK = (1 << 64) - 1

NAMES = {
    **{"Ada": "she", "Ben": "he", "Cleo": "she", "Dan": "he", "Eve": "she", "Finn": "he", "Gus": "he"},
    **{"Hana": "she", "Ivy": "she", "Jon": "he", "Kai": "he", "Lena": "she", "Max": "he", "Nora": "she"},
    **{"Otto": "he", "Pia": "she"},
}
"""Each name's pronoun, fixed for the whole corpus."""


def _pairs(words: str) -> list[tuple[str, str]]:
    """'cat/cats dog/dogs' -> [('cat', 'cats'), ('dog', 'dogs')]."""
    return [tuple(pair.split("/")) for pair in words.split()]  # type: ignore[misc]


ANIMALS = _pairs("cat/cats dog/dogs fox/foxes mouse/mice owl/owls sheep/sheep horse/horses goose/geese "
                 "frog/frogs bird/birds")  # fmt: skip
THINGS = _pairs("apple/apples book/books box/boxes key/keys lamp/lamps coin/coins cup/cups hat/hats "
                "shell/shells plum/plums")  # fmt: skip
VERBS = _pairs("sleeps/sleep runs/run sings/sing jumps/jump waits/wait hides/hide eats/eat plays/play")
ADJECTIVES = ["small", "big", "red", "quiet", "old", "bright", "lazy", "clever", "brown", "happy", "grey"]
WHERE = ["quietly", "all day", "near the door", "under the tree", "in the sun", "at night", "by the wall"]
PLACES = ["the market", "the river", "the old mill", "the garden", "the school", "the forest", "the harbour"]
CONTAINERS = ["the red box", "the blue bag", "the kitchen", "the drawer", "the basket", "the shed"]
TIMES = ["In the morning", "At noon", "Later", "That evening", "On Monday", "After lunch", "Before dawn"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
NUMBERS += ["twelve"]


class SplitMix64:
    """A tiny, version-independent pseudo-random generator (Steele, Lea and Flood's SplitMix64)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next(self) -> int:
        """The next 64-bit value."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """An integer in [0, n); the modulo bias is irrelevant at these sizes."""
        return self.next() % n

    def pick(self, seq: Sequence):
        """A uniformly chosen element of `seq`."""
        return seq[self.below(len(seq))]


def _animals(rng: SplitMix64) -> str:
    plural = rng.below(2)
    subject = f"The {rng.pick(ADJECTIVES)} {rng.pick(ANIMALS)[plural]}"
    return f"{subject} {rng.pick(VERBS)[plural]} {rng.pick(WHERE)}."


def _trip(rng: SplitMix64, name: str) -> str:
    return f"{rng.pick(TIMES)}, {name} went to {rng.pick(PLACES)}."


def _sum_story(rng: SplitMix64, name: str) -> str:
    a, b = 2 + rng.below(8), 2 + rng.below(8)
    thing = rng.pick(THINGS)[1]
    pron = NAMES[name]
    return f"{name} had {a} {thing}. {pron.capitalize()} found {b} more, so {pron} has {a + b} {thing} now."


def _question(rng: SplitMix64, name: str) -> str:
    thing, place = rng.pick(THINGS)[0], rng.pick(CONTAINERS)
    other = rng.pick([n for n in NAMES if n != name])
    # The last clause repeats words from earlier in the sentence: only a model that looks back gets it.
    answer = f'"It is in {place}," said {other}, and {name} found the {thing} there.'
    return f'"Where is the {thing}?" asked {name}. {answer}'


def _count(rng: SplitMix64, name: str) -> str:
    start = 1 + rng.below(6)
    run = NUMBERS[start : start + 3 + rng.below(4)]
    return f"{name} counted: {', '.join(run)}."


def _arithmetic(rng: SplitMix64, name: str) -> str:
    # Two-digit sums with carries: learnt slowly, so longer training keeps paying off.
    a, b = rng.below(50), rng.below(50)
    teacher = "Miss Rose" if NAMES[name] == "he" else "Mr Stone"
    return f'"What is {a} plus {b}?" asked {name}. "It is {a + b}," said {teacher}.'


def _paragraph(rng: SplitMix64) -> str:
    """One short story about one person: three to six sentences."""
    name = rng.pick(list(NAMES))
    makers = [_trip, _sum_story, _question, _count, _arithmetic]
    sentences = [_trip(rng, name)]
    for _ in range(2 + rng.below(4)):
        sentences.append(_animals(rng) if rng.below(3) == 0 else rng.pick(makers)(rng, name))
    return " ".join(sentences)


@functools.lru_cache(maxsize=2)
def builtin_corpus(size: int = BUILTIN_SIZE, seed: int = 0) -> str:
    """`size` characters of generated stories, paragraphs separated by blank lines; deterministic in seed."""
    rng = SplitMix64(seed)
    parts: list[str] = []
    total = 0
    while total < size:
        parts.append(_paragraph(rng))
        total += len(parts[-1]) + 2
    return "\n\n".join(parts)[:size]
