"""Versioned, checksummed model registry with atomic stage pointers.

Layout (DESIGN.md)::

    <root>/<model>/<version>/weights.pt     state_dict, loaded with weights_only=True
                            config.json    family, model and training config, normaliser, features
                            metrics.json
                            manifest.json  sha256 of every file, feature-store hash, data range, created_at
    <root>/<model>/stages.json            {"production": {"version": ..., "history": [...]}, ...}

A version is written to a hidden directory and renamed into place whole;
``stages.json`` is replaced atomically. Loading verifies every checksum first
and names the file that does not match.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from rayfolio.data.store import sha256_file

WEIGHTS, CONFIG, METRICS, MANIFEST, STAGES = "weights.pt", "config.json", "metrics.json", "manifest.json", "stages.json"
STAGE_NAMES = ("production", "staging")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done: names the model, version or file."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path
    config: dict
    metrics: dict
    manifest: dict


def _write_json_atomic(path: Path, payload: dict) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


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
        name: str,
        state_dict: dict[str, torch.Tensor],
        config: dict,
        metrics: dict,
        *,
        feature_manifest_sha256: str,
        data_range: tuple[str, str],
    ) -> ModelVersion:
        """Write a new version; it takes no stage until promoted."""
        directory = self._model_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            torch.save(state_dict, staging / WEIGHTS)
            (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            (staging / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            files = {f: sha256_file(staging / f) for f in (WEIGHTS, CONFIG, METRICS)}
            existing = self.versions(name)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
            manifest = {
                "model": name,
                "version": version,
                "files": files,
                "feature_manifest_sha256": feature_manifest_sha256,
                "data_range": list(data_range),
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.rename(staging, directory / version)  # fails rather than overwrite a concurrent version
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name, version)

    def get(self, name: str, version: str | None = None, stage: str | None = None) -> ModelVersion:
        """Metadata of a version (or of the version a stage points to), checksums verified."""
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
        for file, expected in manifest["files"].items():
            if not (path / file).is_file():
                raise RegistryError(f"{path / file}: listed in {MANIFEST} but missing")
            actual = sha256_file(path / file)
            if actual != expected:
                raise RegistryError(f"{path / file}: sha256 does not match {MANIFEST} (expected {expected}, "
                                    f"actual {actual}); refusing to load it")  # fmt: skip
        return ModelVersion(
            name,
            version,
            path,
            json.loads((path / CONFIG).read_text()),
            json.loads((path / METRICS).read_text()),
            manifest,
        )

    def load_weights(self, model_version: ModelVersion) -> dict[str, torch.Tensor]:
        """The state_dict; ``weights_only`` refuses anything but tensors and plain containers."""
        return torch.load(model_version.path / WEIGHTS, weights_only=True, map_location="cpu")

    # ----- stages -------------------------------------------------------------------

    def _stages(self, name: str) -> dict:
        path = self._model_dir(name) / STAGES
        return json.loads(path.read_text()) if path.is_file() else {}

    def stage_version(self, name: str, stage: str = "production") -> str | None:
        return self._stages(name).get(stage, {}).get("version")

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
