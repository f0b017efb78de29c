"""Intent matching: held-apart accuracy, typo robustness, off-topic confidence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chatlens.inference.intents import (
    MATCH_CACHE_KEY_CHARS,
    MATCH_CACHE_SIZE,
    IntentMatcher,
    normalize,
)
from chatlens.inference.knowledge_base import default_knowledge_base_path, load_knowledge_base

EVAL_SET = Path(__file__).resolve().parents[1] / "data" / "intents_eval.yaml"


@pytest.fixture(scope="module")
def matcher() -> IntentMatcher:
    return IntentMatcher(load_knowledge_base(default_knowledge_base_path()))


def test_top1_accuracy_on_the_held_apart_set_is_at_least_85_percent(
    matcher: IntentMatcher,
) -> None:
    cases = yaml.safe_load(EVAL_SET.read_text())
    assert len(cases) >= 100
    assert {c["lang"] for c in cases} == {"en", "ru"}
    misses = [
        (c["text"], c["intent"], matcher.match(c["text"]).intent)
        for c in cases
        if matcher.match(c["text"]).intent != c["intent"]
    ]
    accuracy = 1 - len(misses) / len(cases)
    assert accuracy >= 0.85, f"accuracy {accuracy:.1%}; misses: {misses}"


def test_the_evaluation_phrases_are_not_in_the_knowledge_base() -> None:
    kb = load_knowledge_base(default_knowledge_base_path())
    examples = {normalize(p) for i in kb.intents for p in i.examples.en + i.examples.ru}
    leaked = [
        c["text"] for c in yaml.safe_load(EVAL_SET.read_text()) if normalize(c["text"]) in examples
    ]
    assert leaked == []


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("wher is my ordr", "order_status"),
        ("где мой заказк", "order_status"),
        ("i forgott my pasword", "reset_password"),
        ("хочу поговорить с оператором", "talk_to_human"),
    ],
)
def test_typos_and_russian_forms_still_match(
    matcher: IntentMatcher, text: str, intent: str
) -> None:
    match = matcher.match(text)
    assert match.intent == intent
    assert match.confidence >= 0.35


@pytest.mark.parametrize(
    "text", ["what is the capital of France", "asdf qwerty", "", "   ", "!!!", "12345"]
)
def test_off_topic_or_empty_text_is_below_the_escalation_threshold(
    matcher: IntentMatcher, text: str
) -> None:
    match = matcher.match(text)
    assert 0.0 <= match.confidence < 0.35


def test_matching_is_deterministic_and_bounded(matcher: IntentMatcher) -> None:
    first = matcher.match("my card payment failed twice")
    assert first == matcher.match("my card payment failed twice")
    assert first.intent == "payment_failed"
    assert 0.0 <= first.confidence <= 1.0


def test_a_repeated_question_is_matched_once_and_the_memory_is_bounded() -> None:
    matcher = IntentMatcher(load_knowledge_base(default_knowledge_base_path()))
    asked = ["Where is my order 12345?", "where is my order #67890", "WHERE IS MY ORDER"]
    matches = [matcher.match(text) for text in asked]
    # Case, punctuation and order numbers are not what a match is made of: one match, the
    # same for all three, remembered for the next two.
    assert matches[0].intent == "order_status"
    assert matches == [matches[0]] * 3
    info = matcher.cache_info()
    assert (info.misses, info.hits, info.currsize) == (1, 2, 1)

    for number in range(MATCH_CACHE_SIZE + 100):
        matcher.match(f"question q{number} about order")  # a word, not only digits
    assert matcher.cache_info().currsize == MATCH_CACHE_SIZE
    # The oldest went first: matched anew, to the same answer as before.
    misses = matcher.cache_info().misses
    assert matcher.match("where is my order") == matches[0]
    assert matcher.cache_info().misses == misses + 1

    # A long message is matched, not remembered: what clients send cannot fill the memory.
    long = "my order has not arrived " * (MATCH_CACHE_KEY_CHARS // 10)
    assert matcher.match(long).intent == matcher.match_anew(long).intent
    assert matcher.cache_info().misses == misses + 1
