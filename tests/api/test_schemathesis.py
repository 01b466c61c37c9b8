"""Property-based tests of every HTTP operation from the app's own OpenAPI schema
(Schemathesis): no server error, responses as documented, every 4xx a JSON error that names
the field at fault."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.server import ApiServer

pytestmark = pytest.mark.slow

# 503 is documented for a session whose worker is not running (nothing runs a worker for
# the random companies generated here); anything else >= 500 is a bug.
ALLOWED_5XX = {(503, "no_worker")}
MAX_EXAMPLES = 25


@schemathesis.check
def no_unexpected_server_error(ctx: CheckContext, response: Response, case: Case) -> None:
    status = response.status_code
    if status < 500:
        return
    code = _error(response).get("code")
    assert (status, code) in ALLOWED_5XX, f"{case.operation.label}: HTTP {status} {code}"


@schemathesis.check
def json_error_names_the_field(ctx: CheckContext, response: Response, case: Case) -> None:
    if not 400 <= response.status_code < 500:
        return
    error = _error(response)
    assert error.get("code"), f"no error code: {response.text[:200]}"
    assert error.get("message"), f"no error message: {response.text[:200]}"
    assert error.get("field"), f"the error names no field: {response.text[:200]}"


def _error(response: Response) -> dict[str, Any]:
    media = response.headers.get("content-type", [""])
    value = media[0] if isinstance(media, list) else str(media)
    assert value.startswith("application/json"), f"error is not JSON: {value}"
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), dict), body
    error: dict[str, Any] = body["error"]
    return error


def test_api_conforms_to_its_schema(api: ApiServer) -> None:
    """Each operation, driven directly (Schemathesis' pytest plugin does not run on this
    pytest): Hypothesis draws cases from the operation's strategy, positive and negative."""
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    checks = [no_unexpected_server_error, json_error_names_the_field, status_code_conformance,
              content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    failures: list[str] = []
    for operation, mode in itertools.product(operations, GenerationMode):
        strategy = operation.as_strategy(generation_mode=mode)

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Case) -> None:
            case.call_and_validate(headers=api.admin(), checks=checks)

        try:
            run()
        except Unsatisfiable:  # no parameters and no body: nothing to make invalid
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # collect every operation's failure, then report
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
