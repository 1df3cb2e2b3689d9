"""Shared fixtures and model factories for the test suite."""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "deeppot",
    max_examples=int(os.environ.get("DEEPPOT_HYPOTHESIS_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("deeppot")


@pytest.fixture
def x64():
    """Run a test with float64 enabled (second derivatives lose digits in float32)."""
    with jax.enable_x64(True):
        yield
