"""`chatlens simulate`: realistic support traffic through the real service, spread over days.

Every conversation goes through the HTTP API of an in-process app (the real routes,
pipeline, bot, storage, metrics and logs). Only the clock is moved back, with
`shifted_clock`, so the rows land on past days. Nothing is inserted directly.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from chatlens import state
from chatlens.auth import service as auth
from chatlens.db.base import shifted_clock
from chatlens.db.session import Database
from chatlens.inference.knowledge_base import KnowledgeBase

PLATFORMS = (("web", 50), ("telegram", 25), ("whatsapp", 15), ("email", 10))
PROJECTS = (("default", 60), ("shop", 30), ("mobile-app", 10))
# Off-topic or garbled messages: the bot is unsure and hands over to a person.
NOISE = (
    "asdf qwerty",
    "my cat is called Boris",
    "what is the meaning of life",
    "перезвоните мне завтра после обеда насчет того самого вопроса",
    "?!",
)
# Hours of the day, weighted to office hours.
HOURS = [(h, 3 if 9 <= h < 18 else 1) for h in range(24)]


class _Clock:
    """The conversation's own time: each step happens a plausible while after the last."""

    def __init__(self, start: datetime, rng: random.Random) -> None:
        self.now = start
        self.rng = rng

    def after(self, low_s: float, high_s: float) -> Any:
        self.now += timedelta(seconds=self.rng.uniform(low_s, high_s))
        return shifted_clock(self.now - datetime.now(UTC))


@dataclass
class Tally:
    conversations: int = 0
    turns: int = 0
    streamed: int = 0
    ratings: int = 0
    csat: int = 0
    nps: int = 0
    escalated: int = 0
    resolved: dict[str, int] = field(default_factory=dict)


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _question(rng: random.Random, kb: KnowledgeBase) -> str:
    if rng.random() < 0.08:
        return rng.choice(NOISE)
    intent = rng.choice(kb.intents)
    phrases = intent.examples.ru if rng.random() < 0.35 else intent.examples.en
    return rng.choice(phrases)


async def simulate(
    app: FastAPI,
    kb: KnowledgeBase,
    *,
    conversations: int,
    days: int,
    seed: int,
    on_conversation: Callable[[], None] | None = None,
) -> Tally:
    """Drive `conversations` conversations through `app`, spread over the last `days` days.

    `on_conversation` is called after each one, for a progress bar.
    """
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    tally = Tally()
    async with state.of(app).get(Database).sessionmaker() as session, session.begin():
        user = await auth.create_user(session, name=f"simulator-{uuid.uuid4().hex[:8]}")
        _, key = await auth.create_key(session, user=user, name="simulate")
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://simulate", headers=headers, timeout=60
    ) as client:
        for number in range(conversations):
            day = today - timedelta(days=rng.randrange(days))
            hour = rng.choices([h for h, _ in HOURS], weights=[w for _, w in HOURS])[0]
            moment = day + timedelta(hours=hour, minutes=rng.randrange(60))
            await _conversation(client, rng, kb, tally, number, _Clock(moment, rng))
            if on_conversation is not None:
                on_conversation()
    return tally


async def _conversation(
    client: httpx.AsyncClient,
    rng: random.Random,
    kb: KnowledgeBase,
    tally: Tally,
    number: int,
    clock: _Clock,
) -> None:
    body: dict[str, Any] = {
        "message": _question(rng, kb),
        "platform": _pick(rng, PLATFORMS),
        "project_id": _pick(rng, PROJECTS),
        "user": f"customer-{rng.randrange(max(2, number // 3 + 2))}",  # some come back
        "stream": rng.random() < 0.4,
    }
    with clock.after(0, 0):
        answer = await _ask(client, "/chat", body, tally)
    conversation = answer["conversation_id"]
    escalated = bool(answer["escalated"])
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        follow = {"message": _question(rng, kb), "stream": rng.random() < 0.4}
        with clock.after(20, 180):  # the customer reads and types
            answer = await _ask(
                client, f"/api/conversations/{conversation}/messages", follow, tally
            )
        escalated = escalated or bool(answer["escalated"])
    tally.conversations += 1
    if rng.random() < 0.45:
        up = rng.random() < (0.45 if escalated else 0.8)
        rating = {"rating": "up" if up else "down"}
        with clock.after(5, 60):
            await _post(client, f"/api/messages/{answer['message_id']}/feedback", rating)
        tally.ratings += 1
    if not escalated and rng.random() < 0.07:
        with clock.after(30, 600):
            await _post(client, f"/api/conversations/{conversation}/escalate", {"reason": "manual"})
        escalated = True
    if escalated:
        tally.escalated += 1
    if rng.random() < 0.35:
        weights = (2, 3, 8, 30, 57) if not escalated else (15, 15, 25, 25, 20)
        score = rng.choices(range(1, 6), weights=weights)[0]
        comment = "это мошенники, пойду в суд" if score == 1 and rng.random() < 0.1 else None
        with clock.after(10, 120):
            await _post(
                client,
                f"/api/conversations/{conversation}/csat",
                {"score": score, "comment": comment},
            )
        tally.csat += 1
    if rng.random() < 0.2:
        score = rng.choices(range(11), weights=(2, 1, 1, 2, 2, 4, 6, 10, 18, 25, 29))[0]
        with clock.after(10, 120):
            await _post(client, f"/api/conversations/{conversation}/nps", {"score": score})
        tally.nps += 1
    if rng.random() < (0.5 if escalated else 0.85):
        outcome = rng.choices(("resolved", "converted", "abandoned"), weights=(65, 15, 20))[0]
        # A person takes minutes to hours on an escalated conversation; the bot's are quick.
        with clock.after(*((600, 14400) if escalated else (60, 900))):
            await _post(client, f"/api/conversations/{conversation}/resolve", {"outcome": outcome})
        tally.resolved[outcome] = tally.resolved.get(outcome, 0) + 1


async def _ask(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], tally: Tally
) -> dict[str, Any]:
    tally.turns += 1
    if not body.get("stream"):
        return await _post(client, path, body)
    tally.streamed += 1
    async with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "done":
                done: dict[str, Any] = orjson.loads(line.removeprefix("data:").strip())
                return done
    raise RuntimeError(f"{path}: the stream ended without its answer")


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    if response.status_code >= 400:
        raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:300]}")
    result: dict[str, Any] = response.json()
    return result
