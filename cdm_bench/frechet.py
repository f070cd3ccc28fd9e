"""The split of a Fréchet distance into its mean and covariance terms (numpy only: used by the
toy FID on the evaluate path and re-exported by :mod:`cdm_bench.report.frontier`)."""

from __future__ import annotations

import numpy as np


def frechet_terms(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> tuple[float, float]:
    """(mean term ``|mu1 - mu2|^2``, covariance term ``tr(S1 + S2 - 2 (S1 S2)^1/2)``); their sum
    is the Fréchet distance. The trace of the root is the sum of the square roots of the
    eigenvalues of ``S1 S2``, as torchmetrics computes it (no warning for singular matrices)."""
    s1, s2 = np.asarray(sigma1, float), np.asarray(sigma2, float)
    mean_term = float(np.sum((np.asarray(mu1, float) - np.asarray(mu2, float)) ** 2))
    root_trace = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    cov_term = float(np.trace(s1) + np.trace(s2) - 2 * root_trace)
    return mean_term, cov_term
