"""Forecasters served by ONNX Runtime: the files an export registers and the session that stands in
for a torch module, so that ``Forecaster.scores`` runs either unchanged.

Files of an exported version (training/export.py writes them, the registry checksums them):
``model.onnx`` for the first seed, ``model-seed<K>.onnx`` for each further one, and with int8
``model-int8.onnx`` / ``model-int8-seed<K>.onnx``. Each graph takes ``x`` (B, W, N, F) float32 and
``neighbours`` (B, N, k) int64 (kept even where unused: one signature for every family) and
returns (B, N, H) scores. onnxruntime is an optional extra (``rayfolio[export]``).
"""

from __future__ import annotations

from typing import Literal

import torch

from rayfolio.training.registry import ModelRegistry, ModelVersion, RegistryError

Runtime = Literal["torch", "onnx", "onnx-int8"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "onnx-int8")
INSTALL_HINT = "pip install 'rayfolio[export]'"


class OnnxRuntimeMissing(RegistryError):
    """onnxruntime (or onnx) is not installed, so an ONNX runtime cannot be used."""


def onnx_file(seed_index: int, runtime: Runtime = "onnx") -> str:
    """The ONNX graph of a member's ``seed_index``-th seed for ``runtime`` ("onnx" or "onnx-int8")."""
    stem = "model" if runtime == "onnx" else "model-int8"
    return f"{stem}.onnx" if seed_index == 0 else f"{stem}-seed{seed_index}.onnx"


def require(module: str = "onnxruntime"):
    """``module`` imported, or a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxRuntimeMissing(f"{module} is not installed; the ONNX runtimes need it: {INSTALL_HINT}") from None


class OnnxForecaster:
    """An ONNX Runtime session answering like a forecaster module: (x, neighbours) -> (B, N, H) tensor."""

    def __init__(self, graph: bytes, threads: int = 1) -> None:
        ort = require()
        options = ort.SessionOptions()
        # One thread by default: a serving replica holds a fraction of a CPU, and more threads
        # than the replica's share only contend (bench/export_latency.py measures 1 and 2).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(self.inputs, (x.detach().numpy(), neighbours.detach().numpy()), strict=True))
        return torch.from_numpy(self.session.run(None, feeds)[0])


def onnx_models(
    registry: ModelRegistry, version: ModelVersion, seeds: int, runtime: Runtime, threads: int = 1
) -> tuple[OnnxForecaster, ...]:
    """One session per seed of ``version`` for ``runtime``, each graph checked against the manifest as read."""
    files = [onnx_file(i, runtime) for i in range(seeds)]
    missing = [f for f in files if f not in version.manifest["files"]]
    if missing:
        raise RegistryError(
            f"{version.name} {version.version} has no {missing[0]} for runtime {runtime!r}: export it first "
            f"(rayfolio models export {version.name} --version {version.version} --runtime onnx"
            f"{' --quantize int8' if runtime == 'onnx-int8' else ''})"
        )
    require()
    return tuple(OnnxForecaster(registry.load_bytes(version, f), threads) for f in files)
