"""Exporting a registered forecaster to ONNX (and int8), registered only when an accuracy gate passes.

``export_forecaster`` takes a registered LSTM or Transformer version and:

1. loads its torch seeds (verified, like any load) on the feature store's panel;
2. exports each seed with ``torch.onnx.export(..., dynamo=True)``: inputs ``x`` (B, W, N, F)
   float32 and ``neighbours`` (B, N, k) int64, B dynamic; with ``quantize="int8"`` also a copy
   whose weights ONNX Runtime's ``quantize_dynamic`` stores as int8 (activations quantised on the fly);
3. runs the gate on the version's own validation dates (its card's calendar), every figure kept
   in ``export.json``:
   - fp32 ONNX against torch, max |diff| <= 1e-5 at two batch sizes (1 and 8 date windows);
   - the median over dates of the Spearman correlation across assets between torch's and each
     exported runtime's forecasts >= 0.99, per horizon;
   - the validation Rank IC (training/metrics.py's) moves by <= 0.005 per horizon;
   - the latency per batch of torch fp32, ONNX fp32 and ONNX int8 (recorded, never gated);
4. when every check passes, registers a new version of the same model: the same card marked with
   its runtimes (``ExportedRuntimes``), the same torch weights files byte for byte (the explainer
   keeps torch: SHAP needs gradients), the ONNX graphs and ``export.json``, all checksummed in
   the manifest. A failing check registers nothing and raises ``ExportGateError`` naming each
   failed check and its figure.

A GAT is refused: its PyG scatter ops do not export, so it stays in torch.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.training.cards import CARD, ExportedRuntimes, ExportRuntime, ForecasterCard
from rayfolio.training.ensemble import Forecaster, load_forecasters, seed_files, split_indices
from rayfolio.training.metrics import daily_rank_ic
from rayfolio.training.onnx_runtime import OnnxForecaster, Runtime, onnx_file, require
from rayfolio.training.panel import Panel, windows
from rayfolio.training.registry import ModelRegistry, ModelVersion, RegistryError, StageChoice

EXPORT_JSON = "export.json"
OPSET = 18
Quantize = Literal["int8"] | None
GAT_STAYS_IN_TORCH = "the GAT stays in torch: its PyTorch Geometric scatter ops do not export to ONNX"
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ExportGateError(RegistryError):
    """The accuracy gate refused an export: names each failed check and its figure; nothing registered."""

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class GateLimits:
    fp32_max_abs_diff: float = 1e-5
    min_median_spearman: float = 0.99
    max_rank_ic_shift: float = 0.005
    batch_sizes: tuple[int, ...] = (1, 8)  # date windows per batch, for the fp32 check and the latency
    latency_repeats: int = 20  # timed calls per (runtime, batch size); the median is kept
    threads: int = 1  # torch's and ONNX Runtime's intra-op threads while timing (a serving replica's)


class ExportReport(BaseModel):
    """``export.json``: what was exported, from what, and every figure of the gate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    source_version: str
    runtimes: tuple[ExportRuntime, ...]
    seeds: int
    opset: int
    software: dict[str, str]  # torch, onnx, onnxruntime versions
    validation: tuple[dt.date, dt.date]
    validation_dates: int
    limits: dict[str, float | int | tuple[int, ...]]
    fp32_max_abs_diff: dict[int, float]  # batch size -> max over seeds and outputs of |onnx - torch|
    median_spearman: dict[ExportRuntime, dict[int, float]]  # runtime -> horizon -> median per-date Spearman
    rank_ic: dict[Runtime, dict[int, float]]  # runtime -> horizon -> validation Rank IC
    rank_ic_shift: dict[ExportRuntime, dict[int, float]]  # runtime -> horizon -> |Rank IC - torch's|
    latency_ms: dict[int, dict[Runtime, float]]  # batch size -> runtime -> median ms per batch (all seeds)
    threads: int
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def rows(self) -> list[dict]:
        """The gate as a table: one row per check and figure."""
        limits = self.limits
        rows = [{"check": f"fp32 max abs(onnx - torch), batch {b}", "figure": f"{d:.2e}",
                 "limit": f"<= {limits['fp32_max_abs_diff']:.0e}", "ok": d <= limits["fp32_max_abs_diff"]}
                for b, d in self.fp32_max_abs_diff.items()]  # fmt: skip
        for runtime in self.runtimes:
            for h, rho in self.median_spearman[runtime].items():
                rows.append({"check": f"{runtime} median per-date Spearman vs torch, {h}d", "figure": f"{rho:.4f}",
                             "limit": f">= {limits['min_median_spearman']}",
                             "ok": rho >= limits["min_median_spearman"]})  # fmt: skip
            for h, shift in self.rank_ic_shift[runtime].items():
                rows.append({"check": f"{runtime} validation Rank IC {h}d (torch {self.rank_ic['torch'][h]:+.4f})",
                             "figure": f"{self.rank_ic[runtime][h]:+.4f} (moved {shift:.4f})",
                             "limit": f"moves <= {limits['max_rank_ic_shift']}",
                             "ok": shift <= limits["max_rank_ic_shift"]})  # fmt: skip
        for b, by_runtime in self.latency_ms.items():
            torch_ms = by_runtime["torch"]
            figure = ", ".join(f"{r} {ms:.2f} ms ({torch_ms / ms:.2f}x)" for r, ms in by_runtime.items())
            rows.append({"check": f"latency per batch of {b} dates, {self.threads} thread(s)", "figure": figure,
                         "limit": "recorded", "ok": True})  # fmt: skip
        return rows


@dataclass(frozen=True)
class Exported:
    report: ExportReport
    version: ModelVersion  # the registered version


# ----- exporting ---------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and quantiser's chatter (tracing warnings, a torchvision notice, advice) off."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "")]
    levels = [lg.level for lg in loggers]
    # The quantiser calls logging.warning(), which gives a root logger without handlers one on
    # stderr for good: every later record of the process would then print twice.
    absorber = logging.NullHandler()
    logging.getLogger().addHandler(absorber)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            logging.getLogger().removeHandler(absorber)


def to_onnx(model: torch.nn.Module, x: torch.Tensor, neighbours: torch.Tensor) -> bytes:
    """``model`` as an ONNX graph (dynamo exporter), the batch dim of both inputs dynamic."""
    require("onnxscript")
    batch = torch.export.Dim.DYNAMIC
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model.eval(), (x, neighbours), dynamo=True, input_names=["x", "neighbours"], output_names=["scores"],
            dynamic_shapes=({0: batch}, {0: batch}), opset_version=OPSET, optimize=True, verbose=False,
        )  # fmt: skip
    return program.model_proto.SerializeToString()


def quantize_int8(graph: bytes) -> bytes:
    """``graph`` with int8 weights (ONNX Runtime's dynamic quantisation: activations quantised per call)."""
    require()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        source, prepared, out = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(graph)
        quant_pre_process(str(source), str(prepared))  # shape inference the quantiser relies on
        # 7-bit weights (reduce_range): without VNNI (AVX2, e.g. this machine) the uint8 x int8 products
        # saturate 16-bit sums, and the quickstart LSTM's per-date Spearman fell to 0.977 (0.9985 with
        # it). Per-channel scales keep small output channels from rounding to zero (the Transformer:
        # 0.9895 at 20d per tensor, 0.9925 per channel).
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
        return out.read_bytes()


# ----- the gate ----------------------------------------------------------------------------------


def member_forecasts(models: tuple[Model, ...], member: Forecaster, ts: np.ndarray, batch: int = 64) -> np.ndarray:
    """(D, N, H) float64: the seeds' mean raw scores at date indices ``ts``, ``batch`` dates per call."""
    out = []
    with torch.no_grad():
        for start in range(0, len(ts), batch):
            chunk = ts[start : start + batch]
            x = torch.from_numpy(windows(member.scaled, chunk, member.window))
            graph = torch.from_numpy(member.neighbours[chunk])
            out.append(np.mean([m(x, graph).double().numpy() for m in models], axis=0))
    return np.concatenate(out)


def _inputs(member: Forecaster, ts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(windows(member.scaled, ts, member.window)), torch.from_numpy(member.neighbours[ts])


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def latency_ms(models: tuple[Model, ...], x: torch.Tensor, neighbours: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of one forecast of a batch by every seed (one warm-up call first)."""
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            for m in models:
                m(x, neighbours)
            if i:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def validation_dates(member: Forecaster, card: ForecasterCard, panel: Panel) -> np.ndarray:
    """The version's own validation date indices (its card's calendar) that have a full window."""
    calendar = card.calendar
    ts = split_indices(panel, PurgedDateSplitter(calendar.splits, purge=calendar.purge), "validation")
    ts = ts[ts >= member.window - 1]
    if len(ts) == 0:
        raise RegistryError(f"{member.name} {member.version}: no validation date of its calendar in this store")
    return ts


def run_gate(
    member: Forecaster,
    card: ForecasterCard,
    panel: Panel,
    graphs: dict[ExportRuntime, tuple[bytes, ...]],
    limits: GateLimits,
) -> ExportReport:
    """Every figure of the gate for ``member`` (torch) against its exported ``graphs`` (runtime -> one per seed)."""
    ts = validation_dates(member, card, panel)
    sessions: dict[Runtime, tuple[Model, ...]] = {"torch": member.models}
    sessions |= {r: tuple(OnnxForecaster(g, limits.threads) for g in seeds) for r, seeds in graphs.items()}

    fp32 = {}
    for b in limits.batch_sizes:
        x, nb = _inputs(member, ts[:b])
        with torch.no_grad():
            fp32[b] = max(float((s(x, nb) - m(x, nb)).abs().max())
                          for m, s in zip(member.models, sessions["onnx"], strict=True))  # fmt: skip

    forecasts = {r: member_forecasts(models, member, ts) for r, models in sessions.items()}
    labels = panel.labels[ts].astype(np.float64)
    horizons = panel.horizons
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dates without labels (the split's end)
        rank_ic = {r: {h: float(np.nanmean(daily_rank_ic(f[..., i], labels[..., i]))) for i, h in enumerate(horizons)}
                   for r, f in forecasts.items()}  # fmt: skip
    spearman = {r: {h: float(np.nanmedian(daily_rank_ic(forecasts[r][..., i], forecasts["torch"][..., i])))
                    for i, h in enumerate(horizons)} for r in graphs}  # fmt: skip
    shift = {r: {h: abs(rank_ic[r][h] - rank_ic["torch"][h]) for h in horizons} for r in graphs}

    with torch_threads(limits.threads):
        latency = {b: {r: latency_ms(models, *_inputs(member, ts[:b]), limits.latency_repeats)
                       for r, models in sessions.items()} for b in limits.batch_sizes}  # fmt: skip

    failures = [f"fp32 ONNX differs from torch by {d:.2e} > {limits.fp32_max_abs_diff:.0e} at batch {b}"
                for b, d in fp32.items() if not d <= limits.fp32_max_abs_diff]  # fmt: skip
    for r in graphs:
        failures += [f"{r} median per-date Spearman vs torch {rho:.4f} < {limits.min_median_spearman} at {h}d"
                     for h, rho in spearman[r].items() if not rho >= limits.min_median_spearman]  # fmt: skip
        failures += [f"{r} validation Rank IC moved by {d:.4f} > {limits.max_rank_ic_shift} at {h}d "
                     f"({rank_ic['torch'][h]:+.4f} -> {rank_ic[r][h]:+.4f})"
                     for h, d in shift[r].items() if not d <= limits.max_rank_ic_shift]  # fmt: skip
    import onnx
    import onnxruntime

    return ExportReport(
        model=member.name, source_version=member.version, runtimes=tuple(graphs), seeds=len(member.models),
        opset=OPSET, software={"torch": torch.__version__, "onnx": onnx.__version__,
                               "onnxruntime": onnxruntime.__version__},
        validation=tuple(pd.Timestamp(panel.dates[t]).date() for t in (ts[0], ts[-1])), validation_dates=len(ts),
        limits={"fp32_max_abs_diff": limits.fp32_max_abs_diff, "min_median_spearman": limits.min_median_spearman,
                "max_rank_ic_shift": limits.max_rank_ic_shift, "batch_sizes": limits.batch_sizes},
        fp32_max_abs_diff=fp32, median_spearman=spearman, rank_ic=rank_ic, rank_ic_shift=shift,
        latency_ms=latency, threads=limits.threads, failures=tuple(failures),
    )  # fmt: skip


# ----- the whole export --------------------------------------------------------------------------


def refuse_gat(version: ModelVersion) -> ForecasterCard:
    """The version's forecaster card; a GAT (or anything but a forecaster) refused in one line."""
    card = version.card
    if not isinstance(card, ForecasterCard):
        raise RegistryError(f"{version.name} {version.version} is {card.kind!r}, not a forecaster: nothing to export")
    if card.family == "gat":
        raise RegistryError(f"{version.name}: {GAT_STAYS_IN_TORCH}; serve it with the torch runtime")
    return card


def export_graphs(member: Forecaster, panel: Panel, ts: np.ndarray, quantize: Quantize) -> dict:
    """{runtime: one ONNX graph per seed}: fp32 always, int8 with ``quantize``."""
    x, nb = _inputs(member, ts[:2])  # any dates: the batch dim is dynamic
    fp32 = tuple(to_onnx(m, x, nb) for m in member.models)
    graphs: dict[ExportRuntime, tuple[bytes, ...]] = {"onnx": fp32}
    if quantize == "int8":
        graphs["onnx-int8"] = tuple(quantize_int8(g) for g in fp32)
    return graphs


def export_forecaster(
    registry: ModelRegistry,
    name: str,
    panel: Panel,
    version: str | None = None,
    quantize: Quantize = None,
    stage: StageChoice = "auto",
    limits: GateLimits = GateLimits(),
) -> Exported:
    """Export ``name`` (``version``, default production) and register the export if the gate passes;
    raises ``ExportGateError`` (nothing registered) if it does not."""
    source = registry.get(name, version)
    card = refuse_gat(source)
    require()
    (member,) = load_forecasters(registry, panel, versions={source.name: source.version})
    graphs = export_graphs(member, panel, validation_dates(member, card, panel), quantize)
    report = run_gate(member, card, panel, graphs, limits)
    if not report.passed:
        raise ExportGateError(f"export gate refused {name} {source.version}, nothing registered: "
                              + "; ".join(report.failures), report)  # fmt: skip
    marked = card.model_copy(update={"export": ExportedRuntimes(source_version=source.version,
                                                                runtimes=tuple(graphs), opset=OPSET)})  # fmt: skip
    marked = CARD.validate_json(marked.model_dump_json(), strict=True)  # what `get` will read back, checked now
    weights = {f: registry.load_bytes(source, f) for f in seed_files(source)}
    onnx_files = {onnx_file(i, r): g for r, seeds in graphs.items() for i, g in enumerate(seeds)}
    export_json = (report.model_dump_json(indent=2) + "\n").encode()
    metrics = {**source.metrics, "exported_from": source.version}
    registered = registry.register(marked, {}, metrics=metrics, stage=stage,
                                   blobs=weights | onnx_files | {EXPORT_JSON: export_json})  # fmt: skip
    return Exported(report, registered)
