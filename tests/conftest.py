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


GENRES = ["Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary",
          "Drama", "Family", "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "N/A",
          "News", "Reality-TV", "Romance", "Sci-Fi", "Short", "Sport", "Thriller", "War",
          "Western"]


def make_poster_folder(root, n=60, seed=0, size=(30, 44)):
    """A dataset in the upstream layout (train.csv + Images/<Id>.jpg) with learnable genres.

    Each poster gets 1 to 3 of the first six genres; genre g paints its own stripe of the
    image bright, so a model can learn them. Returns root.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    rows = []
    w, h = size
    for i in range(n):
        labels = np.zeros(len(GENRES), int)
        labels[rng.choice(6, rng.integers(1, 4), replace=False)] = 1
        pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for g in np.flatnonzero(labels):
            pixels[g * h // 6:(g + 1) * h // 6, :, g % 3] = 230
        poster_id = f"tt{i:07d}"
        Image.fromarray(pixels).save(root / "Images" / f"{poster_id}.jpg", quality=95)
        names = [GENRES[g] for g in np.flatnonzero(labels)]
        rows.append(f'{poster_id},"{names}",' + ",".join(map(str, labels)))
    (root / "train.csv").write_text("Id,Genre," + ",".join(GENRES) + "\n" + "\n".join(rows)
                                    + "\n")
    return root
