"""The shipped knowledge base, and clear failures for a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatlens.inference.knowledge_base import (
    KnowledgeBaseError,
    default_knowledge_base_path,
    detect_language,
    load_knowledge_base,
)

REQUIRED_INTENTS = {
    "order_status",
    "delivery_time",
    "refund",
    "cancel_order",
    "payment_failed",
    "change_address",
    "reset_password",
    "account_locked",
    "card_blocked",
    "pricing",
    "talk_to_human",
    "greeting",
    "thanks",
    "goodbye",
    "complaint",
}


def test_the_shipped_knowledge_base_is_complete() -> None:
    kb = load_knowledge_base(default_knowledge_base_path())
    names = kb.intent_names
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    assert set(names) >= REQUIRED_INTENTS
    for intent in kb.intents:
        assert len(intent.examples.en) >= 8, intent.name
        assert len(intent.examples.ru) >= 4, intent.name
        assert intent.answer.en.strip(), intent.name
        assert intent.answer.ru.strip(), intent.name
        assert detect_language(intent.answer.ru) == "ru", intent.name
    assert [i.name for i in kb.intents if i.escalate] == ["talk_to_human"]
    assert kb.handoff.en.strip()
    assert kb.handoff.ru.strip()


VALID_INTENT = """
  - name: greeting
    examples: {en: [hello], ru: [привет]}
    answer: {en: Hi!, ru: Привет!}
"""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("intents: [ {name: x", "invalid YAML"),
        ("version: 1\nhandoff: {en: a, ru: b}\n", "intents"),
        (
            "version: 1\nhandoff: {en: a, ru: b}\nintents:" + VALID_INTENT + VALID_INTENT,
            "duplicate",
        ),
        (
            "version: 1\nhandoff: {en: a, ru: b}\nintents:"
            + VALID_INTENT.replace("[hello]", "['   ']"),
            "blank",
        ),
    ],
)
def test_a_broken_file_fails_with_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "kb.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KnowledgeBaseError) as caught:
        load_knowledge_base(path)
    message = str(caught.value)
    assert str(path) in message
    assert problem in message.lower() or problem in message, message
    assert "\n" not in message


def test_a_small_custom_knowledge_base_loads(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text("version: 1\nhandoff: {en: a, ru: b}\nintents:" + VALID_INTENT)
    assert load_knowledge_base(path).intent_names == ["greeting"]


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Where is my order?", "en"),
        ("Где мой заказ?", "ru"),
        ("заказ номер 123 order", "ru"),
        ("", "en"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang
