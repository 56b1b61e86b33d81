"""Contract: schemathesis generates requests from ``/openapi.json`` and runs every check.

The real app (in-process WSGI, with an admin token) answers schema-generated valid and invalid
requests; all schemathesis checks run (server errors, status codes, content types, response
schemas, positive and negative data, auth, methods). One allowance is configured, and checked
precisely by error code: no schema can say "these bytes are a PNG/JPEG/GIF/BMP/WebP with ink
in it", so a schema-valid upload of ``POST /v1/predict`` may be refused for its content —
400 ``bad_image`` (not an image), 415 (another image format), 422 ``no_ink`` (schemathesis
sends blank 1x1 images) or ``too_many_characters``; never for its options or form. The same
holds for ``POST /v1/feedback``, which may also find that the text does not fit the image
(422 ``count_mismatch``, ``unknown_label``) or miss it (400 ``bad_parameter``: the text may
come in the query or the body, and OpenAPI cannot require one of the two).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from ocr_service.app import create_app
from ocr_testing.server_utils import copy_model

pytestmark = pytest.mark.slow

TOKEN = "contract-admin-token"
EXAMPLES = 100

#: content-dependent rejections of schema-valid uploads, by operation: status -> error codes
CONTENT_REJECTIONS = {
    "predict": {
        400: {"bad_image"},
        415: {"unsupported_media_type"},
        422: {"no_ink", "too_many_characters"},
    },
    "feedback": {
        400: {"bad_image", "bad_parameter"},
        415: {"unsupported_media_type"},
        422: {"no_ink", "too_many_characters", "count_mismatch", "unknown_label"},
    },
}

#: invalid requests may also be too large: the batch limit is the spec's maxItems, and more
#: parts than the batch allows are refused by the multipart parser with 413 (documented)
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-operation-id": "predict",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "415", "422"]},
                    "negative_data_rejection": {"expected-statuses": ["400", "413", "415", "422"]},
                },
            },
            {
                "include-operation-id": "feedback",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "415", "422"]},
                    "negative_data_rejection": {"expected-statuses": ["400", "413", "415", "422"]},
                },
            },
            {
                "include-operation-id": "predictBatch",
                "checks": {
                    "negative_data_rejection": {"expected-statuses": ["400", "413", "415"]},
                },
            },
        ]
    }
)


@pytest.fixture(scope="module")
def app(tmp_path_factory, small_model_path):
    """The app on a private copy of the model (the contract run calls the reload route),
    keeping corrections in a private folder."""
    base = copy_model(small_model_path, tmp_path_factory.mktemp("contract") / "model")
    return create_app({"model_path": str(base), "admin_token": TOKEN,
                       "feedback_dir": str(base.parent / "feedback")})


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)


def content_rejection_is_documented(ctx, response, case) -> None:
    """A schema-valid request rejected by the allowance must carry the allowed error code."""
    allowed = CONTENT_REJECTIONS.get(case.operation.definition.raw.get("operationId"), {})
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if response.status_code in allowed:
        code = response.json()["error"]["code"]
        assert code in allowed[response.status_code], (response.status_code, code)


def _operation_ids(api_schema) -> list[str]:
    return [op.ok().definition.raw["operationId"] for op in api_schema.get_all_operations()]


#: every operation but ``openapi`` (schemathesis leaves out the one serving the schema; the
#: document itself is validated in test_openapi)
OPERATIONS = ["predict", "predictBatch", "feedback", "feedbackInfo", "model", "reload", "healthz",
              "readyz", "metrics", "index"]  # fmt: skip


#: operations with parameters or a body, for which invalid requests exist
WITH_INPUT = ["predict", "predictBatch", "feedback"]
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in WITH_INPUT
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
def test_every_operation_honours_the_contract(api_schema, operation_id, mode):
    operation = api_schema.find_operation_by_id(operation_id)
    calls = []

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case):
        calls.append(case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKEN}"},
            additional_checks=[content_rejection_is_documented],
        ).status_code)  # fmt: skip

    run()
    assert calls


def test_every_documented_operation_is_exercised(api_schema):
    assert sorted(_operation_ids(api_schema)) == sorted(OPERATIONS)
