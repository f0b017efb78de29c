"""What the benchmarks send: realistic support questions, English and Russian."""

from __future__ import annotations

from pathlib import Path

import yaml

EVAL_SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "intents_eval.yaml"

# POST /chat rotates through these: short and long, typos, both languages, some off-topic.
CHAT_MESSAGES: tuple[str, ...] = (
    "Where is my order?",
    "How long does delivery take to Berlin?",
    "I want a refund for my last purchase, the jacket didn't fit",
    "Please cancel my order 48213",
    "My card payment failed twice, what's going on?",
    "How do I change the delivery address?",
    "i forgot my pasword",
    "My account is locked after too many login attempts",
    "How much does the premium plan cost per month?",
    "Can I talk to a human please",
    "hello there",
    "thanks a lot, that helped!",
    "где мой заказ?",
    "сколько идет доставка до Новосибирска",
    "хочу вернуть деньги за наушники",
    "не проходит оплата картой",
    "забыл пароль от аккаунта",
    "позовите оператора, пожалуйста",
    "the parcel arrived damaged, the box was crushed",
    "do you ship internationally?",
)

# With CHAT_MESSAGES, the matching benchmark's inputs when the evaluation set is absent.
_MORE_QUESTIONS: tuple[str, ...] = (
    "has my package shipped yet",
    "you sent me the wrong size",
    "can I pay with PayPal?",
    "I need an invoice for my company",
    "how do I cancel my subscription",
    "please delete my account and all my data",
    "how much is shipping to Canada",
    "my promo code doesn't work",
    "what are your opening hours on Sunday",
    "is the blue version back in stock?",
    "the app crashes when I open my cart",
    "how many loyalty points do I have",
    "можно ли изменить адрес доставки",
    "карта заблокирована, что делать",
    "как поменять электронную почту в профиле",
    "есть ли гарантия на пылесос",
    "где ваш ближайший магазин",
    "хочу подарочный сертификат",
    "как зарегистрироваться на сайте",
    "ужасный сервис, хочу пожаловаться",
)

BUILTIN_QUESTIONS: tuple[str, ...] = CHAT_MESSAGES + _MORE_QUESTIONS


def matching_inputs() -> tuple[list[str], str]:
    """The evaluation set's phrasings if present and readable, else the built-in questions."""
    try:
        cases = yaml.safe_load(EVAL_SET.read_text(encoding="utf-8"))
        texts = [str(case["text"]) for case in cases]
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        texts = []
    if texts:
        return texts, f"{EVAL_SET.relative_to(EVAL_SET.parents[2])} ({len(texts)} phrasings)"
    return list(BUILTIN_QUESTIONS), f"built-in list ({len(BUILTIN_QUESTIONS)} questions)"
