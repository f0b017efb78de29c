"""Dependency alias for the chat pipeline: PipelineDep."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chatlens.chat.pipeline import ChatPipeline
from chatlens.state import state_of


async def get_pipeline(request: Request) -> ChatPipeline:
    return state_of(request).get(ChatPipeline)


PipelineDep = Annotated[ChatPipeline, Depends(get_pipeline)]
