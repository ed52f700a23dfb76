"""`python -m service`: serve on HOST/PORT (default 127.0.0.1:8000) with the limits of service/server.py."""

import logging
import os
import sys

from service.config import Settings
from service.main import create_app
from service.server import serve

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = Settings()
host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
sys.exit(serve(create_app(settings), settings, host, port))
