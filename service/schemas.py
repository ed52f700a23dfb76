"""Request and response models of the HTTP contract (../shared/design/API.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["hybrid", "dense", "lexical"]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_id: str | None = Field(None, description="only passages of this document (see GET /v1/index)")
    section: str | None = Field(None, description="only passages under this heading (any level) or anchor")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., description="the question or keywords", examples=["who chairs the board?"])
    k: int = Field(10, ge=1, le=50, description="how many passages (1..50)")
    mode: Mode = "hybrid"
    filters: Filters = Field(default_factory=Filters)


class Citation(BaseModel):
    doc_id: str
    doc_title: str
    section: str
    heading_path: list[str]
    anchor: str
    url: str | None
    line_start: int
    line_end: int
    char_start: int
    char_end: int


class Scores(BaseModel):
    dense: float | None = Field(None, description="cosine similarity (null in lexical mode)")
    lexical: float = Field(..., description="BM25 score")


class SearchResult(BaseModel):
    rank: int
    chunk_id: str
    score: float
    text: str
    tokens: int = Field(..., description="length in cl100k_base tokens")
    highlights: list[list[int]] = Field(..., description="[start, end) character spans of `text` that matched")
    citation: Citation
    scores: Scores


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    took_ms: float
    index_version: str
    results: list[SearchResult]


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(..., examples=["Who chairs the OpenInfra Foundation board?"])
    k: int = Field(5, ge=1, le=50, description="passages to retrieve")
    max_context_tokens: int = Field(1500, ge=1, le=100_000, description="budget of `context` in tokens")
    encoding: str = Field("cl100k_base", description="tiktoken encoding that counts the budget")
    history: list[Turn] = Field(default_factory=list, description="earlier turns, oldest first")
    min_confidence: float | None = Field(None, ge=0.0, le=1.0, description="answer only when `confidence` is at "
                                         "least this; default: the calibrated threshold (GET /v1/index)")


class Answer(BaseModel):
    text: str
    citations: list[int]


class Passage(SearchResult):
    n: int


class AskResponse(BaseModel):
    question: str
    answerable: bool
    confidence: float
    answer: Answer
    passages: list[Passage]
    context: str
    context_tokens: int
    took_ms: float
    index_version: str
    retrieval_query: str | None = Field(None, description="the query used for retrieval (with history)")
