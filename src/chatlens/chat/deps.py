"""Dependency alias for the chat pipeline: PipelineDep."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chatlens.chat.pipeline import ChatPipeline


async def get_pipeline(request: Request) -> ChatPipeline:
    pipeline: ChatPipeline = request.app.state.pipeline
    return pipeline


PipelineDep = Annotated[ChatPipeline, Depends(get_pipeline)]
