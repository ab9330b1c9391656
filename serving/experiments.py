"""Experiments (A/B, canary) of model versions in the serving app.

An experiment lives in the Ingress's Serve ``user_config`` (``experiment:`` beside the house
limits) and changes live with ``serve deploy``: a registered model, its control and candidate
versions, the candidate's share of clients and a salt. A client's arm is a stable hash of (salt,
client id): the same on every replica and after every restart, with no state to share. A client
is a candidate iff its hash, read as a number in [0, 1), is below percent / 100, so raising the
percent only ever moves control clients to the candidate, never back.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME = r"^[A-Za-z0-9._-]{1,64}$"
Arm = Literal["control", "candidate"]


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    model: str = Field(pattern=NAME, description="a registered model served here (a forecaster or the allocator)")
    control: str = Field(pattern=NAME, description="the version the control arm serves")
    candidate: str = Field(pattern=NAME, description="the version the candidate arm serves")
    candidate_percent: float = Field(ge=0, le=100, description="share of clients on the candidate, 0..100")
    salt: str = Field("", max_length=128, description="arm assignment salt (default: the name)")

    @model_validator(mode="after")
    def _distinct(self) -> ExperimentConfig:
        if self.candidate == self.control:
            raise ValueError(f"candidate equals control ({self.control}): nothing to compare")
        if not self.salt:
            object.__setattr__(self, "salt", self.name)
        return self


def arm_of(salt: str, client_id: str, percent: float) -> Arm:
    """The client's arm: candidate iff the first 8 bytes of sha256(salt, client id), as a number in
    [0, 1), times 100 are below ``percent``."""
    digest = hashlib.sha256(f"{salt}\x1f{client_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "candidate" if u * 100 < percent else "control"


def client_id(key_id: str, header: str | None) -> str:
    """Who an experiment assigns: the X-Client-Id header when given, else the API key's id."""
    return header or key_id


def conclusion_id(name: str) -> str:
    """The audit request id of an experiment's one conclusion record (promote or stop)."""
    return f"experiment:{name}:conclusion"


def experiment_from_user_config(user_config: dict) -> ExperimentConfig | None:
    """The optional ``experiment`` of the Ingress's user_config; ValueError naming the field."""
    raw = (user_config or {}).get("experiment")
    if raw is None:
        return None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"experiment{'.' + where if where else ''}: {first['msg']}") from None
