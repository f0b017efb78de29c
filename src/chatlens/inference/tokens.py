"""How chatlens counts tokens for backends that report none (the builtin bot).

A token is a run of letters/digits/underscores or a single other non-space character, in any
script (regex ``\\w+|[^\\w\\s]``): "Where's my order?" is 6 tokens — Where, ', s, my, order, ?.
Prompt tokens are summed over every message sent to the model for the turn (the context);
completion tokens are counted on the whole answer, not on the number of streamed pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from chatlens.inference.base import ChatMessage

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def count_prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    return sum(count_tokens(m.content) for m in messages)
