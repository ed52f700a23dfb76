"""POST /v1/ask: the chat-bot backend."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from service.ask import AskUnavailable, BudgetTooSmall
from service.deps import MetricsDep, ReadyDep
from service.errors import BadInput, responses
from service.limits import LimiterDep, client_key
from service.routes.search import check_text
from service.schemas import AskRequest, AskResponse

router = APIRouter(prefix="/v1", tags=["ask"])


@router.post("/ask", response_model=AskResponse, summary="Extractive answer, abstention and LLM-ready context",
             responses=responses(400, 401, 403, 408, 413, 422, 429, 503))
async def ask(req: AskRequest, request: Request, res: ReadyDep, metrics: MetricsDep, limiter: LimiterDep) -> dict:
    """A 503 also when no abstention calibration fits the index (the reason is in `detail`; search works)."""
    s = res.settings
    question = check_text(req.question, ["body", "question"], s.max_query_chars)
    if len(req.history) > s.max_history_turns:
        raise BadInput(["body", "history"], f"has {len(req.history)} turns; the limit is {s.max_history_turns}. "
                       "Send only the most recent turns.", "too_long")
    total = sum(len(t.content) for t in req.history)
    if total > s.max_history_chars:
        raise BadInput(["body", "history"], f"holds {total} characters; the limit is {s.max_history_chars}. "
                       "Send fewer or shorter turns.", "too_long")
    res.retriever.check_query_length(question)  # QueryTooLong: a 422 (service/errors.py) before taking a slot
    history = [t.model_dump() for t in req.history]
    try:
        async with limiter.slot(client_key(request)):
            out = await run_in_threadpool(res.answerer.ask, question, req.k, req.max_context_tokens, req.encoding,
                                          history, req.min_confidence)
    except BudgetTooSmall as e:
        raise BadInput(["body", "max_context_tokens"], str(e), "budget_too_small") from None
    except AskUnavailable as e:
        raise HTTPException(status_code=503, detail=str(e)) from None
    metrics.count("ask", "answered" if out.answerable else "abstained")
    return out.as_dict()
