"""One settings object for the service, read from the environment with the prefix REPORTQA_."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from indexer.embed import DEFAULT_MODEL_NAME


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPORTQA_", extra="ignore")

    index_dir: Path = Field(Path("index"), description="index directory written by `python -m indexer build`")
    model_dir: Path | None = Field(None, description="sentence-transformers model directory; default: bundled")
    model_name: str = Field(DEFAULT_MODEL_NAME, description="model name the index must have been built with")
    torch_threads: int = Field(1, ge=1, le=64, description="CPU threads per query encoding (torch encoder)")
    onnx_threads: int = Field(2, ge=1, le=64, description="ONNX Runtime threads per query encoding (beyond one, "
                              "pool threads that sleep rather than spin between operators)")
    encoder: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto", description="query encoder: onnx (the model on ONNX Runtime: the torch encoder's vectors, about 2.6x "
                            "faster), torch (the reference), onnx-int8 (quantized: faster, rankings differ a "
                            "little) or auto (onnx when the export exists, else torch, said in the log and "
                            "GET /v1/index)")
    batch_wait_ms: float = Field(2.0, ge=0, le=50, description="torch encoder: concurrent queries are encoded "
                                 "together, the first waiting at most this long for others (0: off)")
    batch_max: int = Field(16, ge=1, le=256, description="torch encoder: most queries encoded in one batch")
    onnx_dir: Path | None = Field(None, description="exported ONNX model (python -m indexer export-onnx); "
                                                    "default: <index_dir>/encoders/onnx-query-<adapter> (onnx "
                                                    "without a query adapter)")
    query_adapter: str = Field("packaged", description="questions are encoded with this query adapter "
                               "(indexer.query_adapter, fitted to the report's passages): packaged (the one shipped "
                               "with the code), a directory (python -m eval query-adapter --save), or none (the "
                               "plain model, e.g. for another corpus; it needs a calibration fitted without one)")
    max_query_chars: int = Field(1000, ge=10, description="longest query or question accepted (characters)")
    max_history_turns: int = Field(10, ge=0, description="most earlier turns /v1/ask accepts")
    max_history_chars: int = Field(4000, ge=0, description="most characters in all earlier turns together")
    fusion_alpha: float | None = Field(None, ge=0.0, le=1.0, description="hybrid: weight of the dense score; "
                                       "default 0.7 with a query adapter, 0.5 without (service.retrieval)")
    sentence_weight: float = Field(0.5, ge=0.0, le=1.0, description="dense: weight of the best sentence")
    verify_checksums: bool = Field(True, description="check every index file against the manifest at load")
    calibration: Path | None = Field(None, description="/v1/ask's calibration file; default: calibration.json "
                                     "in the index directory if there is one, else the one shipped with the code")
    reader: Path | None = Field(None, description="/v1/ask's reader (directory with reader.json and the adapter "
                                "weights, python -m eval reader --save); default: the one shipped with the code")
    reader_threads: int = Field(1, ge=1, le=64, description="CPU threads of the reader's one pass per question")
    reader_cache: Path | None = Field(None, description="where the reader's ONNX export is made once and kept; "
                                      "default: $XDG_CACHE_HOME/reportqa or ~/.cache/reportqa")
    cache_size: int = Field(2048, ge=0, description="query vectors kept in memory")
    response_cache: int = Field(1024, ge=0, description="/v1/search responses kept per process, by index version "
                                "and request (took_ms stays per request); 0: off")

    # lifecycle / admin
    admin_token: SecretStr | None = Field(
        None, description="bearer token for /v1/admin/*; unset or empty: the admin endpoints are off (404)")
    api_keys: SecretStr | None = Field(
        None, description="comma-separated keys for /v1/search, /v1/ask and /v1/index (Authorization: Bearer "
                          "<key> or X-API-Key); unset: those endpoints are open")
    load_retry_initial: float = Field(1.0, gt=0, description="seconds before the first retry of a failed start-up load")
    load_retry_max: float = Field(30.0, gt=0, description="longest wait between start-up load retries (doubling)")
    reload_probes: int = Field(3, ge=1, le=20, description="probe queries a new index version must answer before "
                                                          "it is served (at start and on reload)")

    # vector backend (README "Backends: FAISS or Qdrant")
    backend: Literal["faiss", "qdrant"] = Field(
        "faiss", description="where dense, best-sentence and BM25 scoring run: faiss (in this process, from the index "
                             "directory) or qdrant (the collection the alias REPORTQA_QDRANT_ALIAS names; chunk "
                             "records still come from the index directory's version of the same name)")
    qdrant_url: str | None = Field(None, description="Qdrant server URL (e.g. http://qdrant:6333)")
    qdrant_path: Path | None = Field(None, description="qdrant-client local mode on disk, when no URL is given "
                                     "(one process at a time; tests and trials, not production)")
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server, if it needs one")
    qdrant_alias: str = Field("reportqa", description="the alias naming the collection to serve")
    qdrant_exact: bool = Field(True, description="exact scoring (as FAISS Flat); false: Qdrant's HNSW")

    def onnx_path(self, query_adapter: dict | None = None) -> Path:
        """REPORTQA_ONNX_DIR, else the export of the query encoder with this adapter (its fingerprint; None: the
        plain model) under the index root (indexer.query_adapter.onnx_dir)."""
        from indexer.query_adapter import onnx_dir

        return self.onnx_dir or onnx_dir(self.index_dir, query_adapter)

    def api_key_list(self) -> list[str]:
        raw = self.api_keys.get_secret_value() if self.api_keys else ""
        return [k.strip() for k in raw.split(",") if k.strip()]

    def admin_token_value(self) -> str | None:
        return (self.admin_token.get_secret_value() if self.admin_token else "") or None

    # http hardening: limits, timeouts, backpressure, headers (README "Limits and overload")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body; larger is a 413")
    body_timeout_s: float = Field(10.0, gt=0, description="a request body must arrive within this (else 408)")
    headers_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within this")
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")
    graceful_shutdown_s: float = Field(20.0, gt=0, description="SIGTERM: in-flight requests get this long")
    max_connections: int = Field(256, ge=1, description="open connections; a request over the cap is a 503")
    max_concurrency: int = Field(2, ge=1, description="search/ask requests encoding and scoring at once")
    max_queue: int = Field(64, ge=0, description="search/ask requests waiting for a slot; more is a 503")
    queue_timeout_s: float = Field(2.0, gt=0, description="longest wait for a slot before a 503")
    rate_limit: float = Field(0.0, ge=0, description="search/ask requests per second per client IP (0: off)")
    rate_burst: int = Field(20, ge=1, description="token bucket size of the per-client rate limit")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS, comma-separated (none: CORS off)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="accepted Host headers, comma-separated (*: any)")
    docs: bool = Field(True, description="serve Swagger UI at /docs and ReDoc at /redoc (local assets)")

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _within_schema_ceilings(self) -> Settings:
        from service.schemas import MAX_HISTORY_TURNS, MAX_TEXT_CHARS

        if self.max_query_chars > MAX_TEXT_CHARS or self.max_history_chars > MAX_TEXT_CHARS:
            raise ValueError(f"max_query_chars and max_history_chars can be at most {MAX_TEXT_CHARS}")
        if self.max_history_turns > MAX_HISTORY_TURNS:
            raise ValueError(f"max_history_turns can be at most {MAX_HISTORY_TURNS}")
        return self
