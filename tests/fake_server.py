"""Test launcher: `python -m tests.fake_server` serves like `python -m service`, but with the deterministic
FakeEmbedder (tests only; the index in REPORTQA_INDEX_DIR must have been built with it).

FAKE_ENCODE_DELAY_S makes every query encoding take that long, so that tests can hold requests in flight.
"""

import logging
import os
import sys
import time

import numpy as np

from indexer.embed import FakeEmbedder
from service.config import Settings
from service.main import create_app
from service.server import serve


class SlowFakeEmbedder(FakeEmbedder):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().encode(texts, batch_size, progress)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    embedder = SlowFakeEmbedder(float(os.environ.get("FAKE_ENCODE_DELAY_S", "0")))
    app = create_app(settings, embedder=embedder, background_load=False)
    sys.exit(serve(app, settings, "127.0.0.1", int(os.environ["PORT"])))
