"""Shared test helpers. The suite runs with warnings as errors (see pyproject.toml)."""

from pathlib import Path

import numpy as np
import pytest

# The real dataset, when this machine has it; tests that need it skip otherwise.
REAL_POSTERS = Path(__file__).resolve().parents[2] / "shared" / "posters"


def away_from_kink(x, margin=1e-3):
    """Push values within margin of 0 out to +-margin, so ReLU's kink never sits inside h."""
    x = x.copy()
    near = np.abs(x) < margin
    x[near] = np.where(x[near] < 0, -margin, margin)
    return x


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def real_posters():
    if not (REAL_POSTERS / "train.csv").exists():
        pytest.skip(f"real posters not found at {REAL_POSTERS} (they live in ../shared/posters)")
    return REAL_POSTERS
