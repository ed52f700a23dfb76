"""`python -m service`: serve on HOST/PORT (default 127.0.0.1:8000)."""

import logging
import os

import uvicorn

from service.main import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
uvicorn.run(create_app(), host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")),
            log_level="info")
