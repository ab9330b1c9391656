"""The one covariance estimator behind the baselines' refits (rl/baselines.py) and the service's
risk checks (serving/risk.py): Ledoit and Wolf's (2004) shrinkage of the sample covariance towards
a multiple of the identity,

    Sigma = (1 - s) S + s m I,   S = Xc' Xc / L,   m = trace(S) / N,

Xc the (L, N) returns less their mean over the L days, s in [0, 1] the shrinkage that minimises the
expected squared error (scikit-learn's ``ledoit_wolf``, the same formula). Unlike S, Sigma is well
conditioned even when N > L (every eigenvalue >= s m), so no nearest-positive-definite repair.

Every sum the shrinkage needs is read off the (L, L) Gram matrix Xc Xc' (O(L^2 N)) instead of the
(N, N) matrices Xc' Xc and (Xc**2)' (Xc**2) (O(L N^2)), and a portfolio's variance w' Sigma w is
(1 - s) |Xc w|^2 / L + s m |w|^2 (O(L N)): the N x N matrix is formed only when asked for (the
optimisers need it). What is kept is the returns (a view of the caller's array, not copied), their
mean, s and m: O(N) memory of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn.utils.validation as skv
from skfolio.moments import BaseCovariance


@dataclass(frozen=True)
class ShrunkCovariance:
    returns: np.ndarray  # (L, N) daily returns, oldest first; not copied (a view of the caller's)
    mean: np.ndarray  # (N,) over the L days
    shrinkage: float  # s in [0, 1]
    target: float  # m = trace(S) / N, the average variance: the identity's scale

    @classmethod
    def fit(cls, returns: np.ndarray) -> ShrunkCovariance:
        """``returns`` (L, N), L >= 2, finite."""
        x = np.asarray(returns, dtype=np.float64)
        days, n = x.shape
        mean = x.mean(axis=0)
        xc = x - mean  # (L, N)
        gram = xc @ xc.T  # (L, L): Xc Xc'
        norms = np.diag(gram)  # (L,) |x_k|^2 per day
        target = float(norms.sum()) / (days * n)  # trace(S) / N
        if n == 1:  # any shrinkage gives the same 1 x 1 matrix
            return cls(x, mean, 0.0, target)
        frobenius = float((gram**2).sum()) / days**2  # |S|_F^2 = |Xc' Xc|_F^2 / L^2 = |Xc Xc'|_F^2 / L^2
        fourth = float((norms**2).sum())  # sum_k |x_k|^4 = sum of (Xc**2)' (Xc**2)
        # scikit-learn's ledoit_wolf_shrinkage term by term: beta estimates the sample noise in S,
        # delta = |S - m I|_F^2 / N how far S is from the target; s = min(beta, delta) / delta.
        beta = (fourth / days - frobenius) / (n * days)
        delta = (frobenius - n * target**2) / n
        shrinkage = 0.0 if delta <= 0 or beta <= 0 else min(beta, delta) / delta
        return cls(x, mean, float(shrinkage), target)

    def variance(self, weights: np.ndarray) -> float:
        """w' Sigma w of weights (N,), in O(L N)."""
        w = np.asarray(weights, dtype=np.float64)
        centred = self.returns @ w - float(self.mean @ w)  # (L,) the portfolio's demeaned daily returns
        days = len(self.returns)
        return (1.0 - self.shrinkage) * float(centred @ centred) / days + self.shrinkage * self.target * float(w @ w)

    def matrix(self) -> np.ndarray:
        """Sigma (N, N)."""
        xc = self.returns - self.mean
        sigma = (1.0 - self.shrinkage) / len(xc) * (xc.T @ xc)
        sigma[np.diag_indices_from(sigma)] += self.shrinkage * self.target
        return sigma


class LedoitWolf(BaseCovariance):
    """``ShrunkCovariance`` as a skfolio covariance estimator, for the baselines' priors. It is positive
    definite by construction (eigenvalues >= s m), so skfolio's nearest-PD repair (an O(N^3) eigen
    decomposition per fit) is off."""

    def __init__(self) -> None:
        super().__init__(nearest=False)

    def fit(self, X: Any, y: None = None, **fit_params: Any) -> LedoitWolf:
        self.estimate_ = ShrunkCovariance.fit(skv.validate_data(self, X))
        self._set_covariance(self.estimate_.matrix())
        return self
