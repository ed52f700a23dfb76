"""Request and response models of the HTTP contract (../shared/design/API.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

Mode = Literal["hybrid", "dense", "lexical"]

# Hard ceilings of the schemas. The configured limits (REPORTQA_MAX_QUERY_CHARS…) are at most these (the settings
# refuse more), are checked in the routes with a message naming the limit, and are what /openapi.json shows.
MAX_TEXT_CHARS = 10_000
MAX_HISTORY_TURNS = 100
MAX_FILTER_CHARS = 1_000


def unicode_text(value: object) -> object:
    """Refuse a lone surrogate (JSON allows "\\ud800"; Unicode text does not): it cannot be encoded, searched
    or echoed back as UTF-8. Refused rather than replaced, so a query is never altered silently."""
    if not isinstance(value, str):
        return value  # the str validation that follows says what is wrong
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError(
            "lone_surrogate",
            "contains a lone surrogate ({char} at character {position}), which is not Unicode text; "
            "send valid UTF-8 (a JSON \\u escape of a surrogate must be half of a pair)",
            {"char": f"\\u{ord(value[e.start]):04x}", "position": e.start},
        ) from None
    return value


Text = Annotated[str, BeforeValidator(unicode_text)]


def integer_text(value: object) -> object:
    """A whole number in a query string is digits with an optional sign: "5.0" or "1e1" is refused, as the
    schema's `integer` says (pydantic alone would read "5.0" as 5)."""
    if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        raise PydanticCustomError("int_text", "must be a whole number written with digits, not {value!r}",
                                  {"value": value[:40]})
    return value


QueryInt = Annotated[int, BeforeValidator(integer_text)]  # an integer query parameter (GET)


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_id: Text | None = Field(None, max_length=MAX_FILTER_CHARS,
                                description="only passages of this document (see GET /v1/index)")
    section: Text | None = Field(None, max_length=MAX_FILTER_CHARS,
                                 description="only passages under this heading (any level) or anchor")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Text = Field(..., max_length=MAX_TEXT_CHARS, description="the question or keywords",
                        examples=["who chairs the board?"])
    k: int = Field(10, ge=1, le=50, strict=True, description="how many passages (1..50)")
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
    content: Text = Field(..., max_length=MAX_TEXT_CHARS)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: Text = Field(..., max_length=MAX_TEXT_CHARS, examples=["Who chairs the OpenInfra Foundation board?"])
    k: int = Field(5, ge=1, le=50, strict=True, description="passages to retrieve")
    max_context_tokens: int = Field(1500, ge=1, le=100_000, strict=True, description="budget of `context` in tokens")
    encoding: Text = Field("cl100k_base", max_length=100, description="tiktoken encoding that counts the budget")
    history: list[Turn] = Field(default_factory=list, max_length=MAX_HISTORY_TURNS,
                                description="earlier turns, oldest first")
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


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    ctx: dict[str, Any] | None = None


class ValidationErrorBody(BaseModel):
    """422: what is wrong, field by field, and a one-line summary."""

    detail: list[ValidationIssue]
    message: str


class ErrorBody(BaseModel):
    """Every other error: a sentence saying what went wrong and what to do, as `detail` and as `message` (the
    field every error body has)."""

    detail: str
    message: str
