"""Intent matcher: TF-IDF over character n-grams, cosine similarity, an inverted index.

Why character n-grams: they tolerate typos ("ordr" still shares "ord", " or") and Russian
inflection ("заказ", "заказа", "заказом" share their stem's n-grams) without a stemmer or a
dictionary per language.

Why plain dicts instead of scikit-learn/numpy: the bot scores one message at a time against a
few hundred short examples. A single-query walk over an inverted index (n-gram -> postings of
(target, weight)) only touches the n-grams the message actually contains, which beats a
sparse-matrix library's per-call overhead (and matches one message in well under a
millisecond), and it keeps the install free of heavy numeric dependencies.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace

from chatlens.inference.base import ChatMessage
from chatlens.inference.knowledge_base import KnowledgeBase

# The intent of a message no intent matches well enough, everywhere it is recorded.
UNKNOWN_INTENT = "unknown"

# Word-padded n-grams of 3 and 4 characters. Measured on tests/data/intents_eval.yaml with
# the scoring below: 3..4 gives 92.6 % top-1; 2..4 gives 93.8 % at more than twice the time
# a message (benchmarks/README.md) - bigrams are in nearly every example, so their long
# postings cost time for one or two more correct lines.
NGRAM_MIN = 3
NGRAM_MAX = 4

# Score = EXAMPLE_WEIGHT * (best cosine to one example) + the rest * (cosine to the intent's
# centroid for the message's language). Measured on the eval set with 3..4-grams: the best
# example alone gives 89.8 % top-1 and lets off-topic text reach 0.46 (7 of 36 hand-written
# off-topic probes at or above the 0.35 escalation threshold); the even mix gives 92.6 % and
# off-topic text at most ~0.36, because a phrase that shares a few words with one example
# rarely resembles the intent as a whole. The centroid alone would push a sixth of correct
# matches below 0.35.
EXAMPLE_WEIGHT = 0.5

_NON_WORD = re.compile(r"[\W_]+")

# Matches remembered, by the words a match is made of: support questions repeat ("where is
# my order", a widget's quick replies), and a remembered one costs a dictionary look-up
# instead of a match. Order numbers are not among those words, so "order 12345" and "order
# 67890" are one entry. Only short messages are remembered (a long one is rarely asked
# twice), so a full cache stays small whatever clients send (benchmarks/README.md).
MATCH_CACHE_SIZE = 4096
MATCH_CACHE_KEY_CHARS = 256

Vector = dict[str, float]


@dataclass(frozen=True, slots=True)
class IntentMatch:
    """The best intent for a message and how sure the matcher is."""

    intent: str
    confidence: float  # weighted mean of two cosine similarities: in [0, 1], 4 decimals


def normalize(text: str) -> str:
    """Lower-case, fold ё to е, turn everything but letters and digits into single spaces."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("ё", "е")).split())


def char_ngrams(text: str) -> Counter[str]:
    """Count the word-boundary-padded character n-grams of an already normalised text."""
    grams: list[str] = []
    for word in text.split():
        if word.isdigit():
            # Order numbers and amounts say nothing about the intent, and their n-grams would
            # tie a bare "12345" to whichever example happened to hold digits.
            continue
        padded = f" {word} "
        size = len(padded)
        for n in range(NGRAM_MIN, min(NGRAM_MAX, size) + 1):
            grams.extend([padded[start : start + n] for start in range(size - n + 1)])
    return Counter(grams)  # counted in C


def _counted_words(text: str) -> str:
    """The words of a normalised text that `char_ngrams` takes n-grams from."""
    return " ".join(word for word in text.split() if not word.isdigit())


def _l2_normalized(vector: Vector) -> Vector:
    """Scale a vector to unit length (an all-zero vector stays empty)."""
    norm = math.sqrt(sum(weight * weight for weight in vector.values()))
    if norm == 0.0:
        return {}
    return {gram: weight / norm for gram, weight in vector.items()}


class IntentMatcher:
    """Match a message to the closest intent of a knowledge base."""

    def __init__(self, kb: KnowledgeBase, *, cache_size: int = MATCH_CACHE_SIZE) -> None:
        """Build the TF-IDF model and the inverted index once; remember up to `cache_size`
        matches (0: none)."""
        self._names = kb.intent_names
        documents: list[tuple[int, str, Counter[str]]] = []
        for intent_index, intent in enumerate(kb.intents):
            for lang, phrases in (("en", intent.examples.en), ("ru", intent.examples.ru)):
                for phrase in phrases:
                    grams = char_ngrams(normalize(phrase))
                    if grams:
                        documents.append((intent_index, lang, grams))

        doc_freq: Counter[str] = Counter()
        for _, _, grams in documents:
            doc_freq.update(grams.keys())
        total = len(documents)
        # Smooth idf as in scikit-learn: ln((1 + N) / (1 + df)) + 1.
        self._idf = {gram: math.log((1 + total) / (1 + df)) + 1.0 for gram, df in doc_freq.items()}
        # An n-gram no example contains gets the largest idf (df = 0), and it still counts in
        # the message's norm: a message made mostly of unknown n-grams then scores low instead
        # of being judged only by the few n-grams it happens to share with the examples.
        self._unknown_idf = math.log(1 + total) + 1.0

        # Targets are the examples plus one centroid per (intent, language): the max over
        # examples catches a close paraphrase, the centroid pools the vocabulary of an intent.
        example_vectors = [self._weigh(grams) for _, _, grams in documents]
        self._target_intent: list[int] = [intent_index for intent_index, _, _ in documents]
        self._is_centroid: list[bool] = [False] * len(documents)
        targets: list[Vector] = list(example_vectors)

        groups: dict[tuple[int, str], list[Vector]] = {}
        for (intent_index, lang, _), vector in zip(documents, example_vectors, strict=True):
            groups.setdefault((intent_index, lang), []).append(vector)
        for (intent_index, _), vectors in groups.items():
            summed: Vector = {}
            for vector in vectors:
                for gram, weight in vector.items():
                    summed[gram] = summed.get(gram, 0.0) + weight
            targets.append(_l2_normalized(summed))
            self._target_intent.append(intent_index)
            self._is_centroid.append(True)

        postings: dict[str, list[tuple[int, float]]] = {}
        for target_index, vector in enumerate(targets):
            for gram, weight in vector.items():
                postings.setdefault(gram, []).append((target_index, weight))
        self._postings: dict[str, tuple[tuple[int, float], ...]] = {
            gram: tuple(entries) for gram, entries in postings.items()
        }
        self._target_count = len(targets)
        self._remembered = functools.lru_cache(maxsize=cache_size)(self._score)
        # Where a target's score counts: its intent's best example (2 * intent) or the
        # intent's best centroid (2 * intent + 1).
        self._slots = [
            2 * intent_index + is_centroid
            for intent_index, is_centroid in zip(
                self._target_intent, self._is_centroid, strict=True
            )
        ]

    def _weigh(self, grams: Counter[str]) -> Vector:
        """Turn n-gram counts into an L2-normalised sublinear TF-IDF vector."""
        unknown = self._unknown_idf
        idf = self._idf
        return _l2_normalized(
            {
                gram: (1.0 + math.log(count)) * idf.get(gram, unknown)
                for gram, count in grams.items()
            }
        )

    def match(self, text: str) -> IntentMatch:
        """Return the best intent for a message; never raises, unknown text scores ~0."""
        words = _counted_words(normalize(text))
        if len(words) > MATCH_CACHE_KEY_CHARS:
            return self._score(words)
        return self._remembered(words)

    def match_anew(self, text: str) -> IntentMatch:
        """`match`, never from memory (a health check times the matching itself)."""
        return self._score(_counted_words(normalize(text)))

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the remembered matches."""
        return self._remembered.cache_info()

    def _score(self, words: str) -> IntentMatch:
        """The match for a normalised text without its digit-only words.

        The query's TF-IDF weights are summed unnormalised and the scores divided by the
        query's norm at the end: the same cosines as with `_weigh`'s unit vector, without
        building it (a fifth of the time of a match).
        """
        unknown = self._unknown_idf
        idf = self._idf
        postings = self._postings
        scores = [0.0] * self._target_count
        squares = 0.0
        for gram, count in char_ngrams(words).items():
            query_weight = (1.0 + math.log(count)) * idf.get(gram, unknown)
            squares += query_weight * query_weight
            entries = postings.get(gram)
            if entries is None:
                continue
            for target_index, weight in entries:
                scores[target_index] += query_weight * weight

        intent_count = len(self._names)
        best = [0.0] * (2 * intent_count)  # per intent: best example, best centroid
        for slot, score in zip(self._slots, scores, strict=True):
            if score > best[slot]:
                best[slot] = score

        norm = math.sqrt(squares) or 1.0  # no n-grams: every score is 0 anyway
        combined = [
            (EXAMPLE_WEIGHT * best[2 * i] + (1.0 - EXAMPLE_WEIGHT) * best[2 * i + 1]) / norm
            for i in range(intent_count)
        ]
        # max() returns the first maximum, so ties (and all-zero scores) go to the earliest
        # intent in the file: the result is deterministic.
        winner = max(range(intent_count), key=combined.__getitem__)
        confidence = round(min(max(combined[winner], 0.0), 1.0), 4)
        return IntentMatch(intent=self._names[winner], confidence=confidence)


def last_question(messages: Sequence[ChatMessage]) -> str:
    """The latest user message of a conversation ("" when there is none)."""
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def detect(matcher: IntentMatcher, question: str) -> IntentMatch:
    """Match a question: every backend detects intents this way. The match goes on the
    current span (the answer's `chat {model}`): matching can neither fail nor wait, so it
    has no span of its own."""
    match = matcher.match(question)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {"chatlens.intent": match.intent, "chatlens.intent.confidence": match.confidence}
        )
    return match
