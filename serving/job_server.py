"""The service's jobs on its Ray job server: submit, list, follow, stop (``Jobs``), each submission and
stop audited; what a job runs is decided in jobs.py, never here.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path

from pydantic import BaseModel

from rayfolio.serving.errors import RequestError
from rayfolio.serving.jobs import SERVICE_TAG, jobs_dir, new_job_id, plan_job
from rayfolio.serving.settings import ServeSettings


class JobError(RuntimeError):
    """The job server cannot be reached or refused a call: the service answers 503."""


class Jobs:
    """The service's jobs on its Ray job server (sync: the routes call it in a thread)."""

    def __init__(self, settings: ServeSettings, audit) -> None:
        self.settings, self.audit = settings, audit
        self.tag = str(jobs_dir(settings))
        self._client, self._lock = None, threading.Lock()

    def client(self):
        """A client of the job server: ``jobs_address``, else the dashboard of the cluster this
        process runs on (its GCS knows the address; the token comes from the cluster's environment,
        as for any of its workers)."""
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                address = self.settings.jobs_address or _cluster_job_server()
                try:
                    self._client = JobSubmissionClient(address)
                except Exception as err:  # refused, bad token, not a dashboard
                    raise JobError(f"the Ray job server at {address} cannot be reached: {_first_line(err)}") from None
            return self._client

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self.client(), method)(*args, **kwargs)
        except JobError:
            raise
        except Exception as err:
            if "status code 404" in str(err):
                raise RequestError("not_found", f"no job {args[0]!r}", 404) from None
            with self._lock:
                self._client = None  # found again next time (a restarted head, a moved dashboard)
            hint = ""
            if "No available agent" in str(err):  # the head node's dashboard agent runs the jobs
                hint = (" (the head node's dashboard agent is not up: see its dashboard_agent.log; another Ray on "
                        "the machine may hold its port, 52365 by default)")  # fmt: skip
            raise JobError(f"the Ray job server failed: {_first_line(err)}{hint}") from None

    def submit(self, request: BaseModel, key_id: str) -> dict:
        plan = plan_job(request, self.settings, new_job_id(request.command))
        plan.write()
        submitted_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        metadata = {SERVICE_TAG: self.tag, "command": plan.command, "submitted_by": key_id,
                    "submitted_at": submitted_at, "summary": plan.summary, "metrics": plan.metrics or ""}  # fmt: skip
        self._call("submit_job", entrypoint=plan.entrypoint, submission_id=plan.job_id, metadata=metadata)
        payload = {"command": plan.command, "request": request.model_dump(mode="json"), "entrypoint": plan.summary}
        try:
            self.audit.append(key=key_id, request_id=plan.job_id, kind="job_submitted", payload=payload)
        except Exception:  # no job runs unaudited
            self._call("stop_job", plan.job_id)
            raise
        return {"job_id": plan.job_id, "command": plan.command, "status": "PENDING", "submitted_at": submitted_at,
                "submitted_by": key_id}  # fmt: skip

    def list(self) -> list[dict]:
        ours = [
            j for j in self._call("list_jobs") if j.submission_id and (j.metadata or {}).get(SERVICE_TAG) == self.tag
        ]
        ours.sort(key=lambda j: (j.start_time or 0, j.submission_id), reverse=True)
        return [_row(j) for j in ours]

    def info(self, job_id: str):
        job = self._call("get_job_info", job_id)
        if (job.metadata or {}).get(SERVICE_TAG) != self.tag:  # another service's (or a CLI's) job
            raise RequestError("not_found", f"no job {job_id!r}", 404)
        return job

    def get(self, job_id: str) -> dict:
        job = self.info(job_id)
        metadata = job.metadata or {}
        metrics = None
        if _status(job) == "SUCCEEDED" and metadata.get("metrics"):
            path = Path(self.tag) / job_id / metadata["metrics"]
            if path.is_file():
                metrics = json.loads(path.read_text())
        return {**_row(job), "message": job.message, "entrypoint": metadata.get("summary"), "metrics": metrics}

    def logs(self, job_id: str, tail: int) -> dict:
        self.info(job_id)
        text = self._call("get_job_logs", job_id)
        return {"job_id": job_id, "lines": text.splitlines()[-tail:]}

    def stop(self, job_id: str, key_id: str) -> dict:
        self.info(job_id)
        stopped = bool(self._call("stop_job", job_id))
        status = _status(self.info(job_id))
        # Its own record id (the submission holds the job's id; audit ids are unique): one per stop asked.
        record_id = f"{job_id}:stop:{uuid.uuid4().hex[:8]}"
        payload = {"job_id": job_id, "stopped": stopped, "status": status}
        self.audit.append(key=key_id, request_id=record_id, kind="job_stopped", payload=payload)
        return {"job_id": job_id, "stopped": stopped, "status": status}


def _cluster_job_server() -> str:
    import ray

    if not ray.is_initialized():
        raise JobError("no Ray job server: this service runs outside Ray; set jobs_address in the serve settings")
    from ray.dashboard.utils import get_address_for_submission_client

    # The GCS stores the dashboard's address (the job server); the runtime context names the GCS.
    return get_address_for_submission_client(ray.get_runtime_context().gcs_address)


def _status(job) -> str:
    return getattr(job.status, "value", str(job.status))


def _when(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _row(job) -> dict:
    metadata = job.metadata or {}
    return {"job_id": job.submission_id, "command": metadata.get("command"), "status": _status(job),
            "start_time": _when(job.start_time), "end_time": _when(job.end_time),
            "submitted_by": metadata.get("submitted_by")}  # fmt: skip


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
