"""Strict test setup: runtime shape checks on the package, strict dtype promotion, fixed keys."""

from __future__ import annotations

import os

from jaxtyping import install_import_hook

# Every annotated function and module of the package is shape-checked at run time in the tests.
# This must run before anything imports sdeformer.
with install_import_hook("sdeformer", "beartype.beartype"):
    import sdeformer  # noqa: F401

import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

FULL = os.environ.get("SDEFORMER_FULL", "") == "1"
"""SDEFORMER_FULL=1 runs the statistical checks at full size; the default keeps CI fast."""


@pytest.fixture
def key():
    """A fixed PRNG key: every statistical test is deterministic."""
    return jr.key(20231107)


@pytest.fixture
def full() -> bool:
    return FULL


class CompileCounter:
    """Counts XLA backend compilations (jax.monitoring events) while it is registered."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event == self.EVENT:
            self.count += 1


@pytest.fixture
def compiles():
    """A `CompileCounter` registered for the test: `compiles.count` is the compilations so far."""
    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    yield counter
    jax.monitoring.unregister_event_duration_listener(counter)
