"""GET /metrics: the Prometheus exposition, OpenMetrics when the scraper asks for it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from chatlens.observability.deps import MetricsDep

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}, "application/openmetrics-text": {}}}},
)
async def metrics(request: Request, catalogue: MetricsDep) -> Response:
    """Prometheus metrics (text format, or OpenMetrics with exemplars when asked for)."""
    if catalogue is None:
        return Response("metrics are disabled (CHATLENS_METRICS_ENABLED=false)\n", 404)
    body, content_type = catalogue.exposition(request.headers.get("accept"))
    return Response(body, media_type=None, headers={"Content-Type": content_type})
