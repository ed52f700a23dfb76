"""One settings object for the service, read from the environment with the prefix REPORTQA_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.embed import DEFAULT_MODEL_NAME


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPORTQA_", extra="ignore")

    index_dir: Path = Field(Path("index"), description="index directory written by `python -m indexer build`")
    model_dir: Path | None = Field(None, description="sentence-transformers model directory; default: bundled")
    model_name: str = Field(DEFAULT_MODEL_NAME, description="model name the index must have been built with")
    torch_threads: int = Field(1, ge=1, le=64, description="torch CPU threads for query encoding")
    max_query_chars: int = Field(1000, ge=10, description="longest query or question accepted (characters)")
    max_history_turns: int = Field(10, ge=0, description="most earlier turns /v1/ask accepts")
    max_history_chars: int = Field(4000, ge=0, description="most characters in all earlier turns together")
    fusion_alpha: float = Field(0.5, ge=0.0, le=1.0, description="hybrid: weight of the dense score")
    sentence_weight: float = Field(0.5, ge=0.0, le=1.0, description="dense: weight of the best sentence")
    verify_checksums: bool = Field(True, description="check every index file against the manifest at load")
    calibration: Path | None = Field(None, description="/v1/ask's calibration file; default: calibration.json "
                                     "in the index directory if there is one, else the one shipped with the code")
    cache_size: int = Field(2048, ge=0, description="query vectors kept in memory")
