"""Shared fixtures and model factories for the test suite."""

import os
from pathlib import Path

import jax
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "deeppot",
    max_examples=int(os.environ.get("DEEPPOT_HYPOTHESIS_EXAMPLES", "5")),
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


_SLOW_CASES = {
    line.strip()
    for line in (Path(__file__).parent / "slow_cases.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def pytest_collection_modifyitems(config, items):
    """Mark the listed cases slow (`make test` deselects them; `make test-all` runs them)."""
    for item in items:
        if item.nodeid in _SLOW_CASES:
            item.add_marker(pytest.mark.slow)
