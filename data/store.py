"""The feature store on disk: Parquet parts plus ``manifest.json``.

``prepare_feature_store`` runs the pipeline into a hidden temporary directory
next to the target and renames it into place only after every part and the
manifest are written, so a crash or refused input never leaves a store that
looks complete, and a previous store at the target stays intact until the
new one is whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from rayfolio.data.features import FeatureSet, available_features, label_definition, label_name
from rayfolio.data.relative import RELATIVE_NAMES
from rayfolio.data.schema import PanelValidationError
from rayfolio.data.state import RUNNING, tail_rows, write_table_atomic

if TYPE_CHECKING:  # reading a store needs neither Ray Data nor the sources (a serving replica only reads)
    import ray.data

    from rayfolio.data.sources import PanelSource

MANIFEST = "manifest.json"
STATE_DIR = "state"
STORE_FORMAT = "rayfolio-feature-store"
FORMAT_VERSION = 2  # 2: per-symbol state, label patches and appends (version 1 stores still read)


class FeatureStoreError(RuntimeError):
    """A feature store that cannot be written to or read from as asked."""


@dataclass(frozen=True)
class StoreSummary:
    path: str
    rows: int
    symbols: int
    start: str
    end: str
    features: tuple[str, ...]
    labels: tuple[str, ...]
    source: str
    feature_set: str = "basic"
    label_lag: int = 0

    def lines(self) -> list[str]:
        return [
            f"feature store: {self.path}",
            f"  source:   {self.source}",
            f"  rows:     {self.rows:,}",
            f"  symbols:  {self.symbols}",
            f"  dates:    {self.start} .. {self.end}",
            f"  features: {len(self.features)} ({self.feature_set}: {', '.join(self.features)})",
            f"  labels:   {', '.join(self.labels)}" + (f" (label lag {self.label_lag})" if self.label_lag else ""),
        ]


def prepare_feature_store(
    source: PanelSource,
    out: str | os.PathLike,
    horizons: tuple[int, ...],
    *,
    feature_set: FeatureSet = "basic",
    label_lag: int = 0,
) -> StoreSummary:
    """Build the features of ``source`` on Ray Data and publish them at ``out``.

    ``feature_set`` (``basic`` or ``alpha158``) and ``label_lag`` (label entry
    delay in trading days) are recorded in the manifest.
    """
    import ray.exceptions

    from rayfolio.data.pipeline import build_feature_dataset

    target = Path(out).resolve()
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    state_parts = target.parent / f".{target.name}.state-{uuid.uuid4().hex[:8]}"  # one file per symbol
    try:
        try:
            dataset = build_feature_dataset(
                source, horizons, feature_set=feature_set, label_lag=label_lag, state_dir=str(state_parts)
            )
            dataset.write_parquet(str(staging))
        except ray.exceptions.RayTaskError as err:
            # Refused input surfaces inside Ray's task error; hand back the
            # validation error itself, which already names file, row and rule.
            if isinstance(err.cause, PanelValidationError):
                raise err.cause from None
            raise
        state = _gather_state(state_parts, staging, version=1)
        manifest = _manifest(source, staging, horizons, feature_set, label_lag, state)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(state_parts, ignore_errors=True)
    return FeatureStore(target).summary()


def _gather_state(parts: Path, store: Path, version: int) -> dict:
    """The per-symbol state files the build wrote, as one table in the store; its manifest entry."""
    table = pa.concat_tables(pq.read_table(p) for p in sorted(parts.glob("*.parquet")))
    return write_state(table.sort_by([("symbol", "ascending"), ("date", "ascending")]), store, version)


def write_state(table: pa.Table, store: Path, version: int) -> dict:
    """Write a store version's state table under ``state/``; its manifest entry."""
    name = f"{STATE_DIR}/state-v{version:04d}-{uuid.uuid4().hex[:8]}.parquet"
    (store / STATE_DIR).mkdir(exist_ok=True)
    write_table_atomic(table, store / name)
    running = sorted(c[len(RUNNING) :] for c in table.column_names if c.startswith(RUNNING))
    return {"file": name, "sha256": sha256_file(store / name), "running": running}


def _check_target(target: Path) -> None:
    """Refuse to replace anything that is not a feature store (nothing lost)."""
    if not target.exists():
        return
    if not target.is_dir():
        raise FeatureStoreError(f"{target}: exists and is not a directory; refusing to replace it")
    if any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise FeatureStoreError(
            f"{target}: directory is not empty and holds no {MANIFEST}; refusing to replace it with a feature store"
        )


def _publish(staging: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        if old.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _manifest(
    source: PanelSource, staging: Path, horizons: tuple[int, ...], feature_set: FeatureSet, label_lag: int, state: dict
) -> dict:
    from rayfolio.data.sources import FileSource

    parts = sorted(p for p in staging.iterdir() if p.suffix == ".parquet")
    data = pads.dataset([str(p) for p in parts], format="parquet")
    keys = data.to_table(columns=["date", "symbol"])
    dates = keys.column("date")
    features = available_features(source.value_columns, feature_set)
    return {
        "format": STORE_FORMAT,
        "format_version": FORMAT_VERSION,
        "version": 1,  # the store's own version: each append adds one
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": _code_version(),
        "source": {
            "name": source.name,
            "kind": "files" if isinstance(source, FileSource) else "synthetic",
            "content_sha256": source.content_hash(),
            "inputs": [f.display for f in source.files] if isinstance(source, FileSource) else [source.name],
            "value_columns": sorted(source.value_columns),
        },
        "rows": keys.num_rows,
        "symbols": len(pc.unique(keys.column("symbol"))),
        "date_range": [str(pc.min(dates).as_py()), str(pc.max(dates).as_py())],
        "columns": data.schema.names,
        "feature_set": feature_set,
        "features": [
            {"name": f.name, "definition": f.definition, "inputs": list(f.needs), "warmup_rows": f.warmup}
            for f in features
        ],
        "label_lag": label_lag,
        "labels": [
            {"name": label_name(h), "horizon": h, "definition": label_definition(h, label_lag)} for h in horizons
        ],
        "point_in_time": (
            "features at date t use rows dated <= t; label_fwd_<h>d at t uses "
            + ("t+1..t+h" if label_lag == 0 else f"t+1..t+{label_lag}+h")
            + " (trading days)"
        ),
        "files": {p.name: sha256_file(p) for p in parts},
        # Appends (data/append.py): each symbol's tail state, the label patches of old rows in
        # order (a later patch wins), and one entry per append.
        "state": {**state, "tail_rows": tail_rows(features, horizons, label_lag)},
        "label_patches": [],
        "appends": [],
    }


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _code_version() -> dict[str, str | None]:
    try:
        version = metadata.version("rayfolio")
    except metadata.PackageNotFoundError:
        version = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"rayfolio": version, "git_commit": commit}


def patch_labels(frame: pd.DataFrame, patches: pd.DataFrame | None) -> pd.DataFrame:
    """``frame`` with the label values of ``patches`` on the rows they name (same date and symbol)."""
    labels = [c for c in frame.columns if c.startswith("label_fwd_")]
    if patches is None or patches.empty or not labels:
        return frame
    rows = pd.MultiIndex.from_frame(frame[["date", "symbol"]])
    at = rows.get_indexer(pd.MultiIndex.from_frame(patches[["date", "symbol"]]))
    found = at >= 0  # a patch row outside the rows read (a date filter) changes nothing
    for label in labels:
        values = frame[label].to_numpy(copy=True)
        values[at[found]] = patches[label].to_numpy()[found]
        frame[label] = values
    return frame


class FeatureStore:
    """A published feature store: its manifest and its rows."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FeatureStoreError(f"{self.path}: not a feature store (no {MANIFEST})")
        self.manifest: dict = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != STORE_FORMAT:
            raise FeatureStoreError(f"{manifest_path}: not a {STORE_FORMAT} manifest")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.manifest["features"])

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label["name"] for label in self.manifest["labels"])

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(label["horizon"] for label in self.manifest["labels"])

    @property
    def feature_set(self) -> FeatureSet:
        """The catalogue the store was built with; stores written before feature sets hold ``basic``."""
        return self.manifest.get("feature_set", "basic")

    @property
    def cross_sectional_feature_names(self) -> tuple[str, ...]:
        """Features a Panel adds to this store's own from every asset's returns at once (they cannot be stored
        per symbol): the market-relative ones of ``rayfolio.data.relative`` for an ``alpha158`` store."""
        return RELATIVE_NAMES if self.feature_set == "alpha158" else ()

    @property
    def label_lag(self) -> int:
        """Trading days between a label's date and its entry (0 for stores written before the lag existed)."""
        return self.manifest.get("label_lag", 0)

    @property
    def version(self) -> int:
        """1 for a fresh build; each append adds one."""
        return self.manifest.get("version", 1)

    @property
    def state_path(self) -> Path | None:
        """The per-symbol state table (None for stores built before appends existed)."""
        state = self.manifest.get("state")
        return self.path / state["file"] if state else None

    def _parts(self) -> list[str]:
        return [str(self.path / name) for name in sorted(self.manifest["files"])]

    def _patches(self) -> list[Path]:
        return [self.path / patch["file"] for patch in self.manifest.get("label_patches", [])]

    def checksums(self) -> dict[str, str]:
        """Every file the store reads (parts, label patches, state) -> its sha256 in the manifest."""
        files = dict(self.manifest["files"])
        files |= {patch["file"]: patch["sha256"] for patch in self.manifest.get("label_patches", [])}
        if state := self.manifest.get("state"):
            files[state["file"]] = state["sha256"]
        return files

    def verify(self) -> None:
        """Refuse a store whose files do not match the manifest's checksums."""
        for name, expected in self.checksums().items():
            part = self.path / name
            if not part.is_file():
                raise FeatureStoreError(f"{part}: listed in {MANIFEST} but missing")
            if sha256_file(part) != expected:
                raise FeatureStoreError(f"{part}: sha256 does not match {MANIFEST}")

    def to_pandas(
        self, columns: list[str] | None = None, start: str | None = None, end: str | None = None
    ) -> pd.DataFrame:
        """Rows sorted by (date, symbol), optionally only ``start <= date <= end``."""
        data = pads.dataset(self._parts(), format="parquet")
        condition = None
        if start is not None:
            condition = pc.field("date") >= pa.scalar(dt.date.fromisoformat(str(start)))
        if end is not None:
            upper = pc.field("date") <= pa.scalar(dt.date.fromisoformat(str(end)))
            condition = upper if condition is None else condition & upper
        keep = None if columns is None else ["date", "symbol", *(c for c in columns if c not in ("date", "symbol"))]
        frame = data.to_table(columns=keep, filter=condition).to_pandas()
        frame["date"] = pd.to_datetime(frame["date"])
        frame = frame.sort_values(["date", "symbol"], ignore_index=True)
        return patch_labels(frame, self.label_patches(condition))

    def label_patches(self, condition: pc.Expression | None = None) -> pd.DataFrame | None:
        """The labels appends completed on old rows (``date, symbol, label_fwd_<h>d``), the latest
        patch of each row only; None when the store has none."""
        if not (patches := self._patches()):
            return None
        table = pa.concat_tables(pads.dataset(str(p), format="parquet").to_table(filter=condition) for p in patches)
        frame = table.to_pandas()
        frame["date"] = pd.to_datetime(frame["date"])
        return frame.drop_duplicates(["date", "symbol"], keep="last")

    def dataset(self) -> ray.data.Dataset:
        """The rows as a Ray Dataset (for training workers' shards)."""
        import ray.data

        rows = ray.data.read_parquet(self._parts())
        if (patches := self.label_patches()) is None:
            return rows

        def patched(batch: pd.DataFrame) -> pd.DataFrame:
            batch["date"] = pd.to_datetime(batch["date"])
            return patch_labels(batch, patches)

        return rows.map_batches(patched, batch_format="pandas")

    def summary(self) -> StoreSummary:
        m = self.manifest
        return StoreSummary(
            path=str(self.path),
            rows=m["rows"],
            symbols=m["symbols"],
            start=m["date_range"][0],
            end=m["date_range"][1],
            features=self.feature_names,
            labels=self.label_names,
            source=m["source"]["name"],
            feature_set=self.feature_set,
            label_lag=self.label_lag,
        )

    def coverage(self) -> pd.DataFrame:
        """Per feature: share of rows with a value, mean, std, min, max."""
        frame = self.to_pandas(columns=[*self.feature_names, *self.label_names])
        values = frame[[*self.feature_names, *self.label_names]]
        return pd.DataFrame(
            {
                "non_null": values.notna().mean(),
                "mean": values.mean(),
                "std": values.std(),
                "min": values.min(),
                "max": values.max(),
            }
        )
