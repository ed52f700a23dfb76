"""Property-based API testing with schemathesis against /openapi.json, in-process (fake embedder index):
valid and invalid requests to every operation → no 5xx, responses match their schema, every status and
header is documented, 405 carries Allow. The number of examples is bounded (seconds, not minutes)."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, unsupported_method, allow_header_conformance]


EXAMPLES = 200  # per operation and mode


def test_api_contract(fake_index, fake_embedder):
    from service.config import Settings
    from service.main import create_app

    app = create_app(Settings(index_dir=fake_index), embedder=fake_embedder, background_load=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]  # a body over the size limit
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/index", "GET /v1/search", "POST /v1/search",
        "POST /v1/ask"}
    tried = 0
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)
            def run(case):
                nonlocal tried
                tried += 1
                case.call_and_validate(checks=CHECKS)

            try:
                run()
            except Unsatisfiable:  # no parameters to make invalid (GET /healthz…)
                assert mode is GenerationMode.NEGATIVE
    assert tried >= len(operations) * 2
