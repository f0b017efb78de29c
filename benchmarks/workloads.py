"""What the benchmarks send: realistic support questions, English and Russian."""

from __future__ import annotations

from typing import Any

QUESTIONS = [
    "Where is my order?",
    "How long does delivery take to Berlin?",
    "I want a refund for my last purchase",
    "Please cancel my order",
    "My card payment failed twice",
    "How do I change the delivery address?",
    "I forgot my password",
    "My account is locked",
    "How much does the premium plan cost?",
    "Can I talk to a human?",
    "hello there",
    "thanks a lot!",
    "где мой заказ?",
    "сколько идет доставка",
    "хочу вернуть деньги",
    "не проходит оплата",
    "забыл пароль от аккаунта",
    "позовите оператора",
    "the parcel arrived damaged",
    "do you ship internationally?",
]


def chat_request(key: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"}

    def make(n: int) -> dict[str, Any]:
        return {"json": {"message": QUESTIONS[n % len(QUESTIONS)]}, "headers": headers}

    return make
