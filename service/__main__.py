"""`python -m service`: serve on HOST/PORT (default 127.0.0.1:8000) with REPORTQA_WORKERS processes and the
limits of service/server.py (see service/serve.py)."""

import sys

from service.serve import main

sys.exit(main())
