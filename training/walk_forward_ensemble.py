"""The walk-forward's ensembles answering as one ``ForecastEnsemble``: each date forecast by the refit
that owned it."""

from __future__ import annotations

import numpy as np

from rayfolio.training.ensemble import EnsembleForecast, ForecastEnsemble


class WalkForwardEnsemble:
    """The walk-forward's ensembles as one: the forecast at date index t is made by the ensemble of the
    latest refit whose out-of-sample segment starts at or before t (dates before the first segment: the
    first refit's, which never saw them), each calibrated on its own validation window. It answers
    what a ``ForecastEnsemble`` answers; ``forecasters`` and the rest describe the last refit, the one
    the service runs now."""

    def __init__(self, segments: list[tuple[int, ForecastEnsemble]]) -> None:
        """``segments``: (first date index of the refit's segment, its ensemble), in time order."""
        if not segments:
            raise ValueError("a walk-forward ensemble needs at least one refit")
        self.starts = np.array([start for start, _ in segments])
        self.ensembles = [ensemble for _, ensemble in segments]
        last = self.ensembles[-1]
        self.panel, self.forecasters, self.weights, self.ic = last.panel, last.forecasters, last.weights, last.ic
        self.calibration = last.calibration

    def for_date(self, t: int) -> ForecastEnsemble:
        return self.ensembles[max(0, int(np.searchsorted(self.starts, t, side="right")) - 1)]

    @property
    def min_history(self) -> int:
        return max(e.min_history for e in self.ensembles)

    def member_scores(self, t: int) -> np.ndarray:
        return self.for_date(t).member_scores(t)

    def _combine(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        return self.for_date(t)._combine(t)

    def _trailing(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        return self.for_date(t)._trailing(t)

    def confidence(self, t: int, agreement: np.ndarray) -> np.ndarray:
        return self.for_date(t).confidence(t, agreement)

    def forecast(self, t: int) -> EnsembleForecast:
        return self.for_date(t).forecast(t)

    # The same bodies as the single ensemble's: they only ask ``forecast``, ``_combine`` and ``min_history``.
    forecast_many = ForecastEnsemble.forecast_many
    z_panel = ForecastEnsemble.z_panel
