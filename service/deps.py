"""FastAPI dependencies: the loaded resources, refused with 503 until they are ready."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady
from service.metrics import Metrics
from service.state import Resources


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


def get_ready(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    if res.status == "loading":
        raise NotReady("the index is still loading; retry shortly (GET /readyz says when it is ready)")
    if res.status == "error":
        raise NotReady(f"the service cannot serve: {res.error}")
    return res


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ResourcesDep = Annotated[Resources, Depends(get_resources)]
ReadyDep = Annotated[Resources, Depends(get_ready)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
