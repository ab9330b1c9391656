"""What each forecaster family is, for people choosing one (``rayfolio models list``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rayfolio.training.config import TrainConfig


@dataclass(frozen=True)
class ModelSpec:
    family: str
    summary: str
    use_cases: tuple[str, ...]
    strengths: tuple[str, ...]
    weaknesses: tuple[str, ...]
    latency_class: str
    data_needs: str
    explainability: str
    references: tuple[str, ...]

    def default_hyperparameters(self) -> dict:
        return TrainConfig(family=self.family).model_dump(exclude={"family"})

    def as_dict(self) -> dict:
        return {**asdict(self), "default_hyperparameters": self.default_hyperparameters()}


CATALOG: dict[str, ModelSpec] = {
    "lstm": ModelSpec(
        family="lstm",
        summary="LSTM over each asset's feature window, pooled by temporal attention; assets share weights.",
        use_cases=("daily cross-sectional ranking on tens to thousands of assets", "a strong sequence baseline"),
        strengths=("learns path-dependent patterns in a window", "small and fast on CPU", "stable to train"),
        weaknesses=("sees each asset alone: no cross-asset information", "sequential in time, so slow on long windows"),
        latency_class="milliseconds per date on CPU for 20-500 assets",
        data_needs="a few thousand dates of daily features; more assets help more than more features",
        explainability="gradient-based SHAP per feature and day; attention weights show which days mattered",
        references=("Hochreiter & Schmidhuber 1997, Long Short-Term Memory", "Qlib ALSTM benchmark"),
    ),
    "transformer": ModelSpec(
        family="transformer",
        summary="Transformer encoder over each asset's window with sinusoidal positions, causal or pooled.",
        use_cases=("longer windows", "features with long-range interactions in time"),
        strengths=("attends to any day in the window at once", "parallel over time on GPUs"),
        weaknesses=("data hungry; overfits small panels", "more hyperparameters to tune than the LSTM"),
        latency_class="milliseconds per date on CPU; fastest of the three on GPU for long windows",
        data_needs="the most of the three: many dates and assets",
        explainability="gradient-based SHAP per feature and day; attention maps are suggestive, not causal",
        references=("Vaswani et al. 2017, Attention Is All You Need", "Qlib Transformer benchmark"),
    ),
    "gat": ModelSpec(
        family="gat",
        summary=(
            "GRU encoder per asset, then graph attention (GATv2, PyTorch Geometric) over a per-date graph "
            "linking each asset to its most correlated peers over the past 60 days."
        ),
        use_cases=("universes where peers move together (sectors, supply chains)", "lead-lag between assets"),
        strengths=("uses cross-asset information", "the graph is point in time and needs no extra data"),
        weaknesses=(
            "the correlation graph is noisy on short lookbacks",
            "cost grows with assets x neighbours",
            "stays in torch: PyG's scatter ops do not export to ONNX (`rayfolio models export` refuses it)",
        ),
        latency_class="milliseconds per date on CPU for up to a few hundred assets",
        data_needs="daily returns for the graph plus features; benefits from many related assets",
        explainability="gradient-based SHAP for features; attention weights name the neighbours used",
        references=("Brody, Alon & Yahav 2022, How Attentive are Graph Attention Networks?", "Qlib GATs benchmark"),
    ),
}
