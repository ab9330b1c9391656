"""The jobs routes (admin): ``/v1/jobs`` submits one of the allowed rayfolio commands as a Ray job on
the service's cluster, lists, follows, tails and stops them (serving/jobs.py decides what runs).

(No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.)
"""

import asyncio

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.routing import APIRoute

from rayfolio.serving.audit import key_id
from rayfolio.serving.auth import ApiKey
from rayfolio.serving.errors import RequestError
from rayfolio.serving.job_server import JobError, Jobs
from rayfolio.serving.jobs import JOB_ID, JobRequest, catalog
from rayfolio.serving.schemas import ErrorResponse
from rayfolio.serving.service import RecommendationService
from rayfolio.serving.settings import ServeSettings

ERRORS = {status: {"model": ErrorResponse} for status in (401, 403, 404, 422, 429, 503)}


def jobs_router(settings: ServeSettings, service: RecommendationService, admin) -> APIRouter:
    """The routes; ``admin`` is the app's admin-key dependency."""
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS, route_class=_SharedPathRoute)
    jobs = Jobs(settings, service.audit)

    async def call(method, *args):
        try:
            return await asyncio.to_thread(method, *args)
        except JobError as err:  # the job server, not the request: 503, and the request may be retried
            raise RequestError("unavailable", str(err), 503) from None

    @router.get("/catalog", summary="the commands a job may run, their fields and limits, the named configs (admin)")
    async def job_catalog(_: ApiKey = admin) -> dict:
        return catalog(settings)

    @router.post("", status_code=201, operation_id="submit_job",
                 summary="submit an allowed rayfolio command as a Ray job (admin)")  # fmt: skip
    async def submit(body: JobRequest, key: ApiKey = admin) -> dict:
        return await call(jobs.submit, body, key_id(key.key))

    @router.get("", summary="the jobs this service submitted, newest first (admin)")
    async def listing(_: ApiKey = admin) -> dict:
        return {"jobs": await call(jobs.list)}

    @router.get("/{job_id}", summary="a job's status, times and, once it succeeded, its metrics (admin)")
    async def job(job_id: str = Path(pattern=JOB_ID), _: ApiKey = admin) -> dict:
        return await call(jobs.get, job_id)

    @router.get("/{job_id}/logs", summary="the last lines of a job's log (admin)")
    async def logs(
        job_id: str = Path(pattern=JOB_ID), tail: int = Query(200, ge=1, le=5000), _: ApiKey = admin
    ) -> dict:
        return await call(jobs.logs, job_id, tail)

    @router.post("/{job_id}/stop", summary="stop a job (admin)")
    async def stop(job_id: str = Path(pattern=JOB_ID), key: ApiKey = admin) -> dict:
        return await call(jobs.stop, job_id, key_id(key.key))

    for route in router.routes:  # GET and POST /v1/jobs are two routes: each answers a 405 naming both
        route.allowed = frozenset().union(*(r.methods for r in router.routes if r.path == route.path))
    return router


class _SharedPathRoute(APIRoute):
    """A route whose 405 names every method of its path (Starlette's names only the first route's)."""

    allowed: frozenset[str] = frozenset()

    async def handle(self, scope, receive, send) -> None:
        if scope["method"] not in self.methods and self.allowed:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(self.allowed))})
        await super().handle(scope, receive, send)
