"""Property-based fuzzing of the HTTP API from its own /openapi.json (schemathesis):
at least 1000 generated requests per operation, with an admin key and with none.

The ingress runs in this process under uvicorn (the same FastAPI app and Ingress class
Serve runs, its routes given this instance as ``self``), in front of the real Ensemble
and Explainer deployments: Ray's Python proxy would make 18,000 requests take many
minutes here, and what is fuzzed is rayfolio's code, not Ray's proxy.

Every answer must be: no 5xx, a status the schema documents, a body that conforms to
the schema, every error in the error model with no traceback or file path in it, and
without a key, 401 from every protected route whatever the request.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from rayfolio.serving.schemas import ErrorResponse
from tests.serving.tiny_service import ADMIN, USER, free_port, serve_tiny, tiny_settings

pytestmark = pytest.mark.slow

CASES = int(os.environ.get("RAYFOLIO_FUZZ_CASES", 1000))  # per operation and key; fewer while developing
PUBLIC = {"GET /healthz", "GET /readyz"}


def in_process_ingress(settings, ensemble, explainer):
    """The Ingress deployment's class, built here; its routes get this instance as ``self``."""
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve._private.config import DeploymentConfig
    from ray.serve.context import _set_internal_replica_context
    from ray.serve.schema import ReplicaRank

    from rayfolio.serving.app import Ingress

    cls = Ingress.func_or_class
    ingress = cls.__new__(cls)
    asyncio.run(cls.__init__(ingress, settings.model_dump(mode="json"), ensemble, explainer))
    # Serve hands each route its replica's instance (``self``) from the replica context: this
    # process plays that replica.
    _set_internal_replica_context(
        replica_id=ReplicaID("fuzz", DeploymentID("Ingress", "rayfolio")),
        servable_object=ingress,
        _deployment_config=DeploymentConfig(),
        rank=ReplicaRank(rank=0, node_rank=0, local_rank=0),
        world_size=1,
    )
    return ingress.app


def forget_the_in_process_replica(app) -> None:
    """What running here left on the class and app that later tests deploy (and Serve pickles):
    the batch queue on this event loop, the built middleware stack, the replica context."""
    import ray.serve.context

    from rayfolio.serving.app import Ingress

    Ingress.func_or_class._recommend_batch._get_max_batch_size.__self__._queue = None
    app.middleware_stack = None
    ray.serve.context._INTERNAL_REPLICA_CONTEXT = None


@pytest.fixture(scope="module")
def api_url(ray_session, tmp_path_factory):
    import uvicorn
    from ray import serve

    service = tiny_settings(tmp_path_factory.mktemp("fuzz"), rate_per_key=1e6, burst_per_key=10**6,
                            explain_samples=10, explain_background=2)  # fmt: skip
    keys = f"{USER},{ADMIN}:admin"
    client = serve_tiny(service, keys=keys)
    saved = {k: os.environ.get(k) for k in ("RAYFOLIO_API_KEYS", "RAYFOLIO_AUDIT_KEY", "RAYFOLIO_MAX_BODY_BYTES")}
    os.environ.update({"RAYFOLIO_API_KEYS": keys, "RAYFOLIO_AUDIT_KEY": "audit-secret"})
    app = in_process_ingress(service, serve.get_deployment_handle("Ensemble", "rayfolio"),
                             serve.get_deployment_handle("Explainer", "rayfolio"))  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    forget_the_in_process_replica(app)
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    client.close()
    serve.shutdown()


@pytest.fixture(scope="module")
def api_schema(api_url):
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def error_model_only(response) -> None:
    if response.status_code >= 400:
        ErrorResponse.model_validate(response.json())  # raises when the body is anything else
        text = response.text
        for leak in ("Traceback", 'File "', "/work/", "site-packages", "/tmp/", ".py"):
            assert leak not in text, f"{leak!r} in an error body: {text[:300]}"


def strategy(operation):
    """Valid requests and, where the operation takes any input, invalid ones."""
    try:
        negative = operation.as_strategy(GenerationMode.NEGATIVE)
    except Exception:
        return operation.as_strategy(GenerationMode.POSITIVE)
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), negative)


def fuzz(operation, key: str | None) -> int:
    """``CASES`` generated requests to one operation; every answer checked. Returns how many ran."""
    ran = 0

    @given(case=strategy(operation))
    @FUZZ
    def one(case) -> None:
        nonlocal ran
        ran += 1
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        case.headers = headers
        response = case.call(timeout=60)
        case.validate_response(response, checks=CHECKS)
        error_model_only(response)
        if key is None and operation.label not in PUBLIC:
            assert response.status_code in (401, 413), (response.status_code, response.text[:200])

    one()
    return ran


@pytest.mark.parametrize("key", [ADMIN, None], ids=["admin-key", "no-key"])
def test_every_operation_survives_generated_requests(api_schema, key):
    counts = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        counts[operation.label] = fuzz(operation, key)
    print(f"\ncases per operation ({'admin key' if key else 'no key'}): {counts}")
    assert counts and all(n > 0 for n in counts.values())
