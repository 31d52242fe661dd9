"""Array annotations shared by the package."""

from __future__ import annotations

import numpy as np
from jaxtyping import Array

AnyArray = Array | np.ndarray
"""A JAX or NumPy array: functions annotated with it accept both."""

Scalar = float | Array
"""A real number: a Python float, or a JAX scalar (traced parameters of the covariance SDE)."""
