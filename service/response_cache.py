"""The /v1/search response cache: a search box sends the same prefixes again and again.

A bounded LRU of response bodies, keyed by the index version and the request as the route validated it
(query after stripping, k, mode, filters), so that a reload (a new version) never serves an old answer; the
entries of an older version are dropped as soon as a newer one is seen. What a body holds is what the route
computed for that key, except `took_ms`, which is per request: an entry keeps the JSON before and after it,
and each response gets its own. One cache per process, used on the event loop only (no lock).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pydantic_core

MAX_BYTES = 64 * 1024 * 1024  # a ceiling whatever the entry count: a k=50 response is about 60 KB

SearchKey = tuple[str, str, int, str, str | None, str | None]  # version, query, k, mode, doc_id, section


@dataclass(frozen=True)
class CachedBody:
    """A response body without its `took_ms` value: `head + took_ms + tail` is the JSON."""

    head: bytes
    tail: bytes

    def body(self, took_ms: float) -> bytes:
        return self.head + pydantic_core.to_json(took_ms) + self.tail

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)


class ResponseCache:
    """LRU of at most `size` bodies (and MAX_BYTES in all); `size` 0: nothing is kept."""

    def __init__(self, size: int, max_bytes: int = MAX_BYTES) -> None:
        self.size, self.max_bytes = size, max_bytes
        self._data: OrderedDict[SearchKey, CachedBody] = OrderedDict()
        self._bytes = 0
        self._version: str | None = None

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def _see(self, version: str) -> None:
        if version != self._version:  # a reload: answers of another version are never served again
            self.clear()
            self._version = version

    def get(self, key: SearchKey) -> CachedBody | None:
        if not self.enabled:
            return None
        self._see(key[0])
        hit = self._data.get(key)
        if hit is not None:
            self._data.move_to_end(key)
        return hit

    def put(self, key: SearchKey, value: CachedBody) -> None:
        if not self.enabled or len(value) > self.max_bytes:
            return
        self._see(key[0])
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._data[key] = value
        self._bytes += len(value)
        while len(self._data) > self.size or self._bytes > self.max_bytes:
            _, dropped = self._data.popitem(last=False)
            self._bytes -= len(dropped)
