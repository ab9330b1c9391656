"""Versioned, checksummed model registry with atomic stage pointers.

Layout (DESIGN.md)::

    <root>/<model>/<version>/weights.pt     state_dict, loaded with weights_only=True
                            model.onnx     (exports) files kept as bytes: ONNX graphs, export.json
                            card.json      the typed card (training/cards.py): what rebuilds and serves it
                            metrics.json
                            manifest.json  sha256 of every file, feature-store hash, data range, created_at
    <root>/<model>/stages.json            {"production": {"version": ..., "history": [...]}, ...}

A version is written to a hidden directory and renamed into place whole;
``stages.json`` is replaced atomically. Loading verifies every checksum first
and names the file that does not match, then validates the card and names the
field that does not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import ValidationError

from rayfolio.data.store import sha256_file
from rayfolio.training.cards import CARD, Card, CardKind

logger = logging.getLogger(__name__)

WEIGHTS, CARD_FILE, METRICS, MANIFEST, STAGES = (
    "weights.pt",
    "card.json",
    "metrics.json",
    "manifest.json",
    "stages.json",
)
STAGE_NAMES = ("production", "staging")
# "auto": production when the model has no production version yet, else staging; None: no stage.
StageChoice = Literal["auto", "production", "staging"] | None
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_FILE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\.pt$")
# Files written as given (an export's ONNX graphs, its export.json, weights copied verbatim): data, never code.
_BLOB = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\.(pt|onnx|json)$")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done: names the model, version, file or card field."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path
    card: Card
    metrics: dict
    manifest: dict


def _write_json_atomic(path: Path, payload: dict) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def _read_card(path: Path) -> Card:
    """The card at ``path``, validated strictly; a card that does not validate is refused like a bad checksum."""
    try:
        return CARD.validate_json(path.read_bytes(), strict=True)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = (
                e["loc"][1:] if e["loc"] and e["loc"][0] in ("forecaster", "allocator", "tilt") else e["loc"]
            )  # the tag
            problems.append(f"field {'.'.join(map(str, loc)) or 'kind'!r}: {e['msg']}")
        raise RegistryError(f"{path}: not a valid card ({'; '.join(problems)}); refusing to load it") from None


class ModelRegistry:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _model_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r}: use lower-case letters, digits, '-', '_' or '.'")
        return self.root / name

    def models(self) -> list[str]:
        return (
            sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))
            if self.root.exists()
            else []
        )

    def versions(self, name: str) -> list[str]:
        directory = self._model_dir(name)
        if not directory.exists():
            return []
        return sorted(p.name for p in directory.iterdir() if p.is_dir() and re.fullmatch(r"v\d{4,}", p.name))

    def register(
        self,
        card: Card,
        files: Mapping[str, dict[str, torch.Tensor]],
        *,
        metrics: dict,
        stage: StageChoice = "auto",
        blobs: Mapping[str, bytes] | None = None,
    ) -> ModelVersion:
        """Write a new version of ``card.name``: the card, ``metrics``, each state_dict in
        ``files`` (file name -> state_dict, e.g. ``{"weights.pt": model.state_dict()}``) and each
        file in ``blobs`` (file name -> its bytes, e.g. ``{"model.onnx": ...}``); then point
        ``stage`` at it ("auto": production if the model has none yet, else staging)."""
        blobs = dict(blobs or {})
        if stage not in ("auto", *STAGE_NAMES, None):
            raise RegistryError(f"unknown stage {stage!r}; stages: auto, {', '.join(STAGE_NAMES)}")
        for file in files:
            if not _FILE.match(file):
                raise RegistryError(f"file name {file!r}: use lower-case letters, digits, '-' or '_', ending in .pt")
        for file in blobs:
            if not _BLOB.match(file) or file in (CARD_FILE, METRICS, MANIFEST, *files):
                raise RegistryError(f"file name {file!r}: use lower-case letters, digits, '-' or '_', ending in "
                                    f".pt, .onnx or .json, and not {CARD_FILE}, {METRICS}, {MANIFEST} or a "
                                    "state_dict's name")  # fmt: skip
        name = card.name
        directory = self._model_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            for file, state_dict in files.items():
                torch.save(state_dict, staging / file)
            for file, data in blobs.items():
                (staging / file).write_bytes(data)
            (staging / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
            (staging / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            checksums = {f: sha256_file(staging / f) for f in (*files, *blobs, CARD_FILE, METRICS)}
            existing = self.versions(name)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
            manifest = {
                "model": name,
                "version": version,
                "kind": card.kind,
                "files": checksums,
                "feature_manifest_sha256": card.calendar.feature_store_sha256,
                "data_range": [card.calendar.start.isoformat(), card.calendar.end.isoformat()],
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.rename(staging, directory / version)  # fails rather than overwrite a concurrent version
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if stage == "auto":
            stage = "production" if self.stage_version(name, "production") is None else "staging"
        if stage is not None:
            self.promote(name, version, stage)
        logger.info("registered %s %s%s", name, version, f" ({stage})" if stage else "")
        return self.get(name, version)

    def get(self, name: str, version: str | None = None, stage: str | None = None) -> ModelVersion:
        """A version (or the version a stage points to): checksums verified, then its card validated."""
        if version is None:
            version = self.stage_version(name, stage or "production")
            if version is None:
                raise RegistryError(f"model {name!r} has no {stage or 'production'} version")
        path = self._model_dir(name) / version
        if not (path / MANIFEST).is_file():
            raise RegistryError(
                f"model {name!r} has no version {version!r} (known: {', '.join(self.versions(name)) or 'none'})"
            )
        manifest = json.loads((path / MANIFEST).read_text())
        if CARD_FILE not in manifest["files"]:
            raise RegistryError(f"{path / MANIFEST}: lists no {CARD_FILE} (written before typed cards?); "
                                "refusing to load it: retrain and register it again")  # fmt: skip
        for file, expected in manifest["files"].items():
            if not (path / file).is_file():
                raise RegistryError(f"{path / file}: listed in {MANIFEST} but missing")
            actual = sha256_file(path / file)
            if actual != expected:
                raise RegistryError(f"{path / file}: sha256 does not match {MANIFEST} (expected {expected}, "
                                    f"actual {actual}); refusing to load it")  # fmt: skip
        card = _read_card(path / CARD_FILE)
        if card.name != name:
            raise RegistryError(f"{path / CARD_FILE}: a card of {card.name!r} in {name!r}; refusing to load it")
        return ModelVersion(name, version, path, card, json.loads((path / METRICS).read_text()), manifest)

    def production(self, kind: CardKind | tuple[CardKind, ...]) -> list[ModelVersion]:
        """The production versions of every model of ``kind`` (one kind, or any of a tuple
        of kinds, e.g. ``ALLOCATOR_KINDS``), by name; each one verified."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        out = []
        for name in self.models():
            version = self.stage_version(name, "production")
            if version is not None and _peek_kind(self.root / name / version / CARD_FILE) in (*kinds, None):
                out.append(self.get(name, version))
        return [v for v in out if v.card.kind in kinds]

    def load_weights(self, model_version: ModelVersion, file: str = WEIGHTS) -> dict[str, torch.Tensor]:
        """A state_dict; ``weights_only`` refuses anything but tensors and plain containers."""
        if file not in model_version.manifest["files"]:
            raise RegistryError(f"{model_version.name} {model_version.version} has no {file}")
        return torch.load(model_version.path / file, weights_only=True, map_location="cpu")

    def load_bytes(self, model_version: ModelVersion, file: str) -> bytes:
        """A file's bytes, checked against the manifest as read (what was verified is what is used:
        an ONNX graph swapped after ``get`` is refused here too)."""
        expected = model_version.manifest["files"].get(file)
        if expected is None:
            raise RegistryError(f"{model_version.name} {model_version.version} has no {file}")
        path = model_version.path / file
        try:
            data = path.read_bytes()
        except OSError:
            raise RegistryError(f"{path}: listed in {MANIFEST} but missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise RegistryError(f"{path}: sha256 does not match {MANIFEST} (expected {expected}, "
                                f"actual {actual}); refusing to load it")  # fmt: skip
        return data

    # ----- stages -------------------------------------------------------------------

    def _stages(self, name: str) -> dict:
        path = self._model_dir(name) / STAGES
        return json.loads(path.read_text()) if path.is_file() else {}

    def stage_version(self, name: str, stage: str = "production") -> str | None:
        return self._stages(name).get(stage, {}).get("version")

    def stage_of(self, model_version: ModelVersion) -> str | None:
        """The stage that points at this version now, if any."""
        stages = self._stages(model_version.name)
        return next((s for s in STAGE_NAMES if stages.get(s, {}).get("version") == model_version.version), None)

    def promote(self, name: str, version: str, stage: str = "production") -> None:
        """Point ``stage`` at ``version`` (verified first); the previous one is kept for rollback."""
        if stage not in STAGE_NAMES:
            raise RegistryError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)}")
        self.get(name, version)
        stages = self._stages(name)
        current = stages.get(stage, {"version": None, "history": []})
        history = [*current["history"], current["version"]] if current["version"] else current["history"]
        stages[stage] = {"version": version, "history": history}
        _write_json_atomic(self._model_dir(name) / STAGES, stages)

    def rollback(self, name: str, stage: str = "production") -> str:
        """Point ``stage`` back at the version it held before; returns that version."""
        stages = self._stages(name)
        current = stages.get(stage)
        if not current or not current["history"]:
            raise RegistryError(f"model {name!r} has no earlier {stage} version to roll back to")
        previous = current["history"][-1]
        self.get(name, previous)
        stages[stage] = {"version": previous, "history": current["history"][:-1]}
        _write_json_atomic(self._model_dir(name) / STAGES, stages)
        return previous


def _peek_kind(card: Path) -> str | None:
    """The kind a card says it is, read without verifying anything (``get`` verifies): None
    when unreadable, so that ``get`` is the one to refuse it by name."""
    try:
        kind = json.loads(card.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None
