"""Test helpers: the package's synthetic gradients, and matched errors against the truth."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from spear.synthetic import LayerGradients, first_layer_gradients  # noqa: F401 (re-exported)


def matched_relative_errors(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Hungarian-matched relative L2 error of each true input."""
    d = ((recon[:, None, :] - truth[None, :, :]) ** 2).sum(-1)
    i, j = linear_sum_assignment(d)
    return np.sqrt(d[i, j]) / np.linalg.norm(truth[j], axis=1)
