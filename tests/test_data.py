"""Tests for nn/data.py (labels, image decoding, the cache, split, batches) and data/download.py.

Everything runs on small synthetic posters made in tmp_path, except one test that reads 50 real
posters from ../shared/posters when that folder exists.
"""

import importlib.util
import io
import json
import os
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nn import data
from nn.data import (DataError, DataLoader, PosterDataset, find_dataset, load_image, load_images,
                     read_labels, to_float, train_val_split)

REPO = Path(__file__).resolve().parents[1]
SHARED_POSTERS = REPO.parent / "shared" / "posters"

# The upstream header's genre columns, in file order.
UPSTREAM_GENRES = [
    "Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary", "Drama",
    "Family", "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "N/A", "News",
    "Reality-TV", "Romance", "Sci-Fi", "Short", "Sport", "Thriller", "War", "Western",
]


# ------------------------------------------------------------------------- synthetic posters

def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def _palette(colours, index):
    """A palette image whose every pixel is colours[index]."""
    img = Image.new("P", (24, 30), index)
    img.putpalette([c for rgb in colours for c in rgb])
    return img


def _animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


# name -> (writer(path), expected RGB of the solid image, tolerance)
MODES = {
    "jpeg_rgb": (lambda p: _save(Image.new("RGB", (30, 44), (200, 30, 60)), p, "JPEG", quality=95),
                 (200, 30, 60), 4),
    "png_rgb": (lambda p: _save(Image.new("RGB", (50, 50), (10, 120, 240)), p, "PNG"),
                (10, 120, 240), 0),
    "grey_l": (lambda p: _save(Image.new("L", (13, 77), 128), p, "PNG"), (128, 128, 128), 0),
    "rgba_half": (lambda p: _save(Image.new("RGBA", (40, 20), (255, 0, 0, 128)), p, "PNG"),
                  (255, 127, 127), 1),
    "palette": (lambda p: _save(_palette([(0, 0, 0), (10, 200, 30)], 1), p, "PNG"),
                (10, 200, 30), 0),
    "palette_transparent": (lambda p: _save(_palette([(10, 20, 30)], 0), p, "PNG",
                                            transparency=0), (255, 255, 255), 0),
    "cmyk_jpeg": (lambda p: _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), p, "JPEG",
                                  quality=95), (255, 0, 0), 4),
    "grey16": (lambda p: _save(Image.new("I;16", (16, 16), 16384), p, "PNG"), (64, 64, 64), 0),
    "animated_gif": (_animated_gif, (255, 0, 0), 0),
    "png_named_jpg": (lambda p: _save(Image.new("RGB", (20, 30), (0, 255, 0)), p, "PNG"),
                      (0, 255, 0), 0),
}


def make_dataset(root: Path) -> Path:
    """A dataset folder in the upstream layout: one poster per mode in MODES, two exact duplicate
    rows, one poster labelled N/A."""
    lines = ["Id,Genre," + ",".join(UPSTREAM_GENRES)]
    for k, (name, (write, _, _)) in enumerate(MODES.items()):
        write(root / "Images" / f"tt{k:07d}.jpg")
        genres = ["N/A"] if name == "grey_l" else [UPSTREAM_GENRES[k], "Drama"]
        onehot = ",".join("1" if g in genres else "0" for g in UPSTREAM_GENRES)
        lines.append(f'tt{k:07d},"{genres}",{onehot}')
    lines += [lines[1], lines[3]]   # exact repeats, as upstream has
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def posters(tmp_path) -> Path:
    return make_dataset(tmp_path / "posters")


def _image_path(root: Path, name: str) -> Path:
    return root / "Images" / f"tt{list(MODES).index(name):07d}.jpg"


# ------------------------------------------------------------------------------------- labels

def test_read_labels_upstream_layout(posters):
    labels = read_labels(posters / "train.csv", expected_genres=UPSTREAM_GENRES)
    assert labels.genres == UPSTREAM_GENRES
    assert labels.ids == [f"tt{k:07d}" for k in range(len(MODES))]
    assert labels.y.dtype == np.uint8 and labels.y.shape == (len(MODES), 25)
    assert labels.n_duplicates_dropped == 2 and labels.skipped == []
    assert labels.lines == list(range(2, 2 + len(MODES)))
    na_row = labels.ids.index(_image_path(posters, "grey_l").stem)
    assert labels.y[na_row].tolist() == [g == "N/A" for g in UPSTREAM_GENRES]


def _csv(tmp_path, text: str) -> Path:
    path = tmp_path / "train.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ("", "empty"),
    ("Id,Genre,Action,Drama\n", "no data rows"),
    ("Name,Genre,Action\nx,[],1\n", "line 1: no 'Id' column"),
    ("Id,Genre\nx,[]\n", "line 1: no genre columns"),
    ("Id,Genre,Action,Drama\na,[],0,1\nb,[],2,0\n", "line 3: label Action='2'"),
    ("Id,Genre,Action,Drama\na,[],0,1\n\nb,[],1,\n", "line 4: label Drama=''"),
    ("Id,Genre,Action,Drama\na,[],0,1\nb,[],1,0\na,[],1,1\n",
     "id a has different labels on lines [2, 4]"),
    ("Id,Genre,Action,Drama\n../../etc/passwd,[],0,1\n", "line 2: unusable id"),
])
def test_read_labels_bad_csv_names_file_and_line(tmp_path, text, expected):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError, match="train.csv") as err:
        read_labels(path)
    assert expected in str(err.value)


def test_read_labels_expected_genres(tmp_path):
    path = _csv(tmp_path, "Id,Genre,Action,Dramma\na,[],0,1\n")
    with pytest.raises(DataError, match=r"missing \['Drama'\], unexpected \['Dramma'\]"):
        read_labels(path, expected_genres=["Action", "Drama"])
    with pytest.raises(DataError, match="order differs"):
        read_labels(path, expected_genres=["Dramma", "Action"])


def test_read_labels_skip_bad_rows(tmp_path):
    path = _csv(tmp_path,
                "Id,Genre,Action,Drama\na,[],0,1\nb,[],2,0\nc,[],1,0\nc,[],0,1\nd,[],1,1\n")
    labels = read_labels(path, on_bad_row="skip")
    assert labels.ids == ["a", "d"]
    assert labels.y.tolist() == [[0, 1], [1, 1]]
    assert len(labels.skipped) == 3 and "line 3" in labels.skipped[0]


# ------------------------------------------------------------------------------------- images

@pytest.mark.parametrize("name", list(MODES))
def test_load_image_any_mode_to_rgb(tmp_path, name):
    write, colour, tolerance = MODES[name]
    path = write(tmp_path / f"{name}.jpg")
    pixels = load_image(path, size=(8, 6))
    assert pixels.shape == (6, 8, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - colour).max() <= tolerance


def _truncated_jpeg(p: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=95)
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


BAD_FILES = {
    "zero_bytes": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated": (_truncated_jpeg, "truncated"),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not an image"),
    "text": (lambda p: p.write_text("Id,Genre\nthis is not a poster\n"), "not an image"),
    "bomb_warning": (lambda p: Image.new("RGB", (60, 60)).save(p, "PNG"), "decompression bomb"),
    "bomb_error": (lambda p: Image.new("RGB", (100, 100)).save(p, "PNG"), "decompression bomb"),
    "missing": (lambda p: None, "no such file"),
}


@pytest.fixture
def small_pixel_limit(monkeypatch):
    # Above every synthetic poster; 60 x 60 lies between the limit and twice the limit (where
    # Pillow only warns), 100 x 100 beyond (where it raises).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_load_image_bad_file_raises_data_error(tmp_path, small_pixel_limit, name):
    write, reason = BAD_FILES[name]
    path = tmp_path / "poster.jpg"
    write(path)
    with pytest.raises(DataError, match=reason) as err:
        load_image(path, size=(8, 8))
    assert str(err.value).startswith(str(path))


def test_bomb_is_refused_even_when_warnings_are_ignored(tmp_path, small_pixel_limit):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (60, 60)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="decompression bomb"):
            load_image(path)


def test_load_images_stop_and_skip(tmp_path):
    good = [_save(Image.new("RGB", (10, 10), (i, 0, 0)), tmp_path / f"{i}.png", "PNG")
            for i in (10, 20, 30)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    paths = [good[0], bad, good[1], good[2]]
    with pytest.raises(DataError, match="bad.jpg"):
        load_images(paths, size=4, progress=False)
    out = np.full((4, 4, 4, 3), 7, np.uint8)
    images, ok = load_images(paths, size=4, on_bad_image="skip", out=out, progress=False, workers=2)
    assert images is out and ok.tolist() == [True, False, True, True]
    assert images[1].max() == 0 and images[[0, 2, 3], 0, 0, 0].tolist() == [10, 20, 30]


# ------------------------------------------------------------------------------ the dataset

def test_poster_dataset_shapes_and_values(posters, tmp_path):
    ds = PosterDataset(posters, size=(12, 10), cache_dir=tmp_path / "cache", progress=False)
    n = len(MODES)
    assert len(ds) == n and ds.images.shape == (n, 10, 12, 3) and ds.images.dtype == np.uint8
    assert not ds.images.flags.writeable
    assert ds.y.dtype == np.float32 and ds.y.shape == (n, 25)
    assert ds.genres == UPSTREAM_GENRES and ds.root == posters
    assert ds.n_duplicates_dropped == 2 and ds.n_skipped == 0
    for row, (name, (_, colour, tolerance)) in enumerate(MODES.items()):
        assert np.abs(ds.images[row].astype(int) - colour).max() <= tolerance, name


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_poster_dataset_bad_image_policy(posters, tmp_path, small_pixel_limit, name):
    victim = _image_path(posters, "png_rgb")
    victim.unlink()
    BAD_FILES[name][0](victim)
    with pytest.raises(DataError, match=f"id {victim.stem}.*{victim.name}"):
        PosterDataset(posters, size=8, cache_dir=tmp_path / "cache", progress=False)
    ds = PosterDataset(posters, size=8, cache_dir=tmp_path / "cache", on_bad_image="skip",
                       progress=False)
    assert ds.n_skipped == 1 and victim.stem in ds.skipped[0] and victim.stem not in ds.ids
    assert ds.images.shape == (len(MODES) - 1, 8, 8, 3) and len(ds.y) == len(MODES) - 1
    # The cache remembers the skip; asking to stop on bad images still stops.
    with pytest.raises(DataError, match=victim.stem):
        PosterDataset(posters, size=8, cache_dir=tmp_path / "cache", progress=False)


def _cache_files(cache: Path) -> list[Path]:
    """The cache's .npy and .json files, without the file-digest memo beside them."""
    return sorted(f for f in cache.iterdir() if not f.name.endswith(".digests.json"))


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded although the cache was valid")


def test_cache_is_reused_and_invalidated(posters, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = PosterDataset(posters, size=8, cache_dir=cache, progress=False)
    first_files = _cache_files(cache)
    assert [f.suffix for f in first_files] == [".json", ".npy"]

    monkeypatch.setattr(data, "load_image", _no_decoding)
    again = PosterDataset(posters, size=8, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.y, first.y)
    monkeypatch.undo()

    # A changed image is decoded again, and the stale cache file is gone.
    Image.new("RGB", (50, 50), (1, 2, 3)).save(_image_path(posters, "png_rgb"), "PNG")
    changed = PosterDataset(posters, size=8, cache_dir=cache, progress=False)
    assert changed.images[list(MODES).index("png_rgb"), 0, 0].tolist() == [1, 2, 3]
    assert not set(first_files) & set(_cache_files(cache))

    # So is a changed CSV (here: one poster's labels).
    csv = posters / "train.csv"
    csv.write_text(csv.read_text().replace("tt0000000,\"['Action', 'Drama']\",1",
                                           "tt0000000,\"['Drama']\",0"))
    relabelled = PosterDataset(posters, size=8, cache_dir=cache, progress=False)
    assert relabelled.y[0, 0] == 0 and changed.y[0, 0] == 1
    assert len(_cache_files(cache)) == 2


# Reopening reads no poster whose stat fingerprint is unchanged (nn.data._file_digests).

@pytest.fixture
def image_reads(monkeypatch) -> list[str]:
    """The names of the posters whose bytes are read with Path.read_bytes, which is how the
    cache key's digests read them (decoding opens the files through Pillow instead)."""
    reads = []
    read_bytes = Path.read_bytes

    def spy(self):
        if self.parent.name == "Images":
            reads.append(self.name)
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    return reads


@pytest.fixture
def settled(monkeypatch):
    """Trust the fingerprints of the posters just written, as if they were seconds old (by
    default a file changed within 2 s of its hashing is hashed again on every open)."""
    monkeypatch.setattr(data, "_RACY_NS", 0)


def _open(posters: Path, cache: Path) -> PosterDataset:
    return PosterDataset(posters, size=8, cache_dir=cache, progress=False)


def _memo(cache: Path) -> Path:
    (memo,) = cache.glob("*.digests.json")
    return memo


ALL_POSTERS = sorted(f"tt{k:07d}.jpg" for k in range(len(MODES)))
ROW = list(MODES).index("png_rgb")


def test_reopening_reads_no_unchanged_poster(posters, tmp_path, monkeypatch, image_reads,
                                             settled):
    cache = tmp_path / "cache"
    first = _open(posters, cache)
    assert sorted(image_reads) == ALL_POSTERS   # each hashed once for the cache key
    (npy,) = cache.glob("*.npy")
    assert _memo(cache).name == npy.name.rsplit("-", 1)[0] + ".digests.json"   # its family

    image_reads.clear()
    monkeypatch.setattr(data, "load_image", _no_decoding)
    again = _open(posters, cache)
    assert image_reads == []
    np.testing.assert_array_equal(again.images, first.images)
    assert list(cache.glob("*.npy")) == [npy]

    # A touched poster (same bytes, new mtime) is read again, and the cache still fits it.
    victim = _image_path(posters, "png_rgb")
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = _open(posters, cache)
    assert image_reads == [victim.name] and list(cache.glob("*.npy")) == [npy]
    np.testing.assert_array_equal(touched.images, first.images)


def _bmp(colour) -> bytes:
    """A 50 x 50 poster whose file size does not depend on its colour (BMP is uncompressed)."""
    buf = io.BytesIO()
    Image.new("RGB", (50, 50), colour).save(buf, "BMP")
    return buf.getvalue()


def _rewrite_keeping_mtime(path: Path, st) -> None:
    path.write_bytes(_bmp((1, 2, 3)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))   # only the ctime tells


CHANGES = {
    "new pixels": lambda path, st: Image.new("RGB", (60, 40), (1, 2, 3)).save(path, "PNG"),
    "same size, new mtime": lambda path, st: path.write_bytes(_bmp((1, 2, 3))),
    "same size and mtime": _rewrite_keeping_mtime,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_poster_is_hashed_again(posters, tmp_path, image_reads, settled, change):
    victim = _image_path(posters, "png_rgb")
    victim.write_bytes(_bmp(MODES["png_rgb"][1]))
    cache = tmp_path / "cache"
    first = _open(posters, cache)
    (old_npy,) = cache.glob("*.npy")
    st = victim.stat()

    CHANGES[change](victim, st)
    now = victim.stat()
    assert now.st_ctime_ns != st.st_ctime_ns and now.st_ino == st.st_ino
    if change != "new pixels":
        assert now.st_size == st.st_size
    image_reads.clear()
    changed = _open(posters, cache)
    assert image_reads == [victim.name]
    assert changed.images[ROW, 0, 0].tolist() == [1, 2, 3]
    others = np.arange(len(MODES)) != ROW
    np.testing.assert_array_equal(changed.images[others], first.images[others])
    assert [f.name for f in cache.glob("*.npy")] != [old_npy.name]   # a new key...
    assert len(list(cache.glob("*.npy"))) == 1                      # ...replacing the old file


DAMAGED_MEMOS = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "not utf-8": lambda good: b"\xff\xfe\x00garbage",
    "a json list": lambda good: b"[]",
    "deeply nested": lambda good: b"[" * 100_000,
    "another format": lambda good: good.replace(data._DIGESTS_FORMAT.encode(), b"digests v0"),
    "malformed entries": lambda good: json.dumps(
        {"format": data._DIGESTS_FORMAT,
         "files": {name: [*entry[:4], None] if i % 2 else entry[:3]
                   for i, (name, entry) in enumerate(json.loads(good)["files"].items())}}
    ).encode(),
}


@pytest.mark.parametrize("damage", list(DAMAGED_MEMOS))
def test_damaged_memo_is_ignored_and_rewritten(posters, tmp_path, monkeypatch, image_reads,
                                               settled, damage):
    cache = tmp_path / "cache"
    first = _open(posters, cache)
    memo = _memo(cache)
    good = memo.read_bytes()
    memo.write_bytes(DAMAGED_MEMOS[damage](good))

    image_reads.clear()
    monkeypatch.setattr(data, "load_image", _no_decoding)   # the cache itself is still valid
    again = _open(posters, cache)
    assert sorted(image_reads) == ALL_POSTERS
    np.testing.assert_array_equal(again.images, first.images)
    assert json.loads(memo.read_bytes()) == json.loads(good)
    image_reads.clear()
    _open(posters, cache)
    assert image_reads == []


def test_unwritable_memo_only_costs_hashing(posters, tmp_path, image_reads, settled):
    cache = tmp_path / "cache"
    first = _open(posters, cache)
    memo = _memo(cache)
    memo.unlink()
    memo.mkdir()   # neither readable nor replaceable as a file
    for _ in range(2):
        image_reads.clear()
        again = _open(posters, cache)
        assert sorted(image_reads) == ALL_POSTERS
        np.testing.assert_array_equal(again.images, first.images)
    assert memo.is_dir() and [f.name for f in cache.iterdir() if f.suffix == ".tmp"] == []


def test_racily_clean_poster_is_hashed_until_its_change_is_old(posters, tmp_path, monkeypatch,
                                                                image_reads):
    assert data._RACY_NS >= 1_000_000_000   # beyond the coarsest common timestamp tick
    cache = tmp_path / "cache"
    monkeypatch.setattr(data, "_RACY_NS", 0)   # the posters count as old: all remembered
    _open(posters, cache)
    # The window stretched to an hour, so that even a stalled test stays inside it.
    monkeypatch.setattr(data, "_RACY_NS", 3600 * 10**9)

    # Changed just now: a same-tick rewrite could keep this fingerprint, so it is not trusted.
    victim = _image_path(posters, "png_rgb")
    Image.new("RGB", (50, 50), (1, 2, 3)).save(victim, "PNG")
    for _ in range(2):
        image_reads.clear()
        ds = _open(posters, cache)
        assert image_reads == [victim.name]
        assert ds.images[ROW, 0, 0].tolist() == [1, 2, 3]
    # Nor is a copy that was given an old mtime: its ctime is still now.
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))
    image_reads.clear()
    _open(posters, cache)
    assert image_reads == [victim.name]

    monkeypatch.setattr(data, "_RACY_NS", 0)   # as if the change were now seconds old
    image_reads.clear()
    _open(posters, cache)
    assert image_reads == [victim.name]
    image_reads.clear()
    _open(posters, cache)
    assert image_reads == []


def test_limit_and_default_cache_dir(posters, tmp_path, monkeypatch):
    monkeypatch.setenv("NN_CACHE_DIR", str(tmp_path / "env-cache"))
    ds = PosterDataset(posters, size=4, limit=3, progress=False)
    assert ds.images.shape == (3, 4, 4, 3) and ds.ids == [f"tt{k:07d}" for k in range(3)]
    assert len(list((tmp_path / "env-cache").glob("*.npy"))) == 1


def test_find_dataset(posters, tmp_path, monkeypatch):
    monkeypatch.delenv("POSTERS_DIR", raising=False)
    assert find_dataset(posters) == posters
    monkeypatch.setenv("POSTERS_DIR", str(posters))
    assert find_dataset() == posters
    with pytest.raises(DataError, match="--data.*download.py"):
        find_dataset(tmp_path / "nowhere")
    monkeypatch.delenv("POSTERS_DIR")
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path)
    with pytest.raises(DataError, match="POSTERS_DIR"):
        find_dataset()


# ------------------------------------------------------------------------- split and batches

def test_train_val_split():
    train, val = train_val_split(100, val_fraction=0.25, seed=3)
    assert len(train) == 75 and len(val) == 25
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.array_equal(np.union1d(train, val), np.arange(100))
    assert not np.intersect1d(train, val).size
    again, _ = train_val_split(100, val_fraction=0.25, seed=3)
    other, _ = train_val_split(100, val_fraction=0.25, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


@pytest.fixture
def small_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 4, 3, 3), dtype=np.uint8)
    y = rng.integers(0, 2, size=(50, 25)).astype(np.float32)
    return images, y


def _epoch(loader):
    """One pass over the loader, copying each batch (the loader reuses its buffers)."""
    return [(x.copy(), y.copy()) for x, y in loader]


def test_dataloader_batches(small_images):
    images, y = small_images
    y[:, 0] = np.arange(50)     # column 0 identifies the row
    indices = np.arange(5, 45)
    loader = DataLoader(images, y, indices, batch_size=7)
    assert len(loader) == 6
    batches = _epoch(loader)
    assert [len(x) for x, _ in batches] == [7, 7, 7, 7, 7, 5]
    seen = np.concatenate([yb[:, 0] for _, yb in batches]).astype(int)
    assert sorted(seen) == list(indices)
    for x, yb in batches:
        rows = yb[:, 0].astype(int)
        assert x.dtype == np.float32 and x.shape[1] == 4 * 3 * 3
        np.testing.assert_array_equal(x, images[rows].reshape(len(rows), -1) / np.float32(255))
        np.testing.assert_array_equal(yb, y[rows])
        assert 0 <= x.min() and x.max() <= 1


def test_dataloader_epochs_are_reproducible(small_images):
    images, y = small_images
    y[:, 0] = np.arange(50)

    def order(batches):
        return np.concatenate([yb[:, 0] for _, yb in batches])

    loader = DataLoader(images, y, batch_size=10, seed=1)
    epoch0, epoch1 = order(_epoch(loader)), order(_epoch(loader))
    assert loader.epoch == 2 and not np.array_equal(epoch0, epoch1)
    resumed = DataLoader(images, y, batch_size=10, seed=1)
    resumed.set_epoch(1)
    assert np.array_equal(order(_epoch(resumed)), epoch1)
    other_seed = DataLoader(images, y, batch_size=10, seed=2)
    assert not np.array_equal(order(_epoch(other_seed)), epoch0)
    unshuffled = DataLoader(images, y, batch_size=10, shuffle=False)
    assert np.array_equal(order(_epoch(unshuffled)), np.arange(50))


def test_dataloader_reuses_its_buffers(small_images):
    images, y = small_images
    loader = DataLoader(images, y, batch_size=8, drop_last=True)
    assert len(loader) == 6
    xs = [x for x, _ in loader]
    assert all(x.base is xs[0].base for x in xs) and all(len(x) == 8 for x in xs)


def test_to_float():
    u8 = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    out = np.empty((4, 64), np.float32)
    assert to_float(u8, out=out) is out
    np.testing.assert_array_equal(out, u8.reshape(4, -1).astype(np.float32) / 255)
    assert to_float(u8).shape == (4, 64)


# ---------------------------------------------------------------------------------------- fuzz

def test_fuzz_load_image_only_raises_data_error(tmp_path):
    gradient = np.add.outer(np.arange(48), np.arange(64)).astype(np.uint8) * 2
    buf = io.BytesIO()
    rgb = np.dstack([gradient, gradient[::-1], gradient[:, ::-1]])
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    original = buf.getvalue()
    rng = np.random.default_rng(1234)
    path = tmp_path / "fuzz.jpg"
    outcomes = {"ok": 0, "DataError": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a warning would surface as a DataError naming it
        for case in range(300):
            blob = bytearray(original)
            if case < 100:
                blob = blob[: rng.integers(0, len(blob))]
            else:
                for pos in rng.integers(0, len(blob), size=rng.integers(1, 8)):
                    blob[pos] ^= 1 << rng.integers(0, 8)
            path.write_bytes(bytes(blob))
            try:
                pixels = load_image(path, size=(16, 12))
            except DataError as e:
                assert "Warning" not in str(e), f"case {case}: a warning escaped: {e}"
                outcomes["DataError"] += 1
            else:
                assert pixels.shape == (12, 16, 3) and pixels.dtype == np.uint8
                outcomes["ok"] += 1
    assert outcomes["ok"] and outcomes["DataError"]


# ------------------------------------------------------------------------------- real posters

def test_real_posters(tmp_path):
    if not (SHARED_POSTERS / "train.csv").is_file():
        pytest.skip(f"no real posters at {SHARED_POSTERS} (the shared dataset folder)")
    ds = PosterDataset(SHARED_POSTERS, size=64, limit=50, cache_dir=tmp_path, progress=False)
    assert ds.images.shape == (50, 64, 64, 3) and ds.n_skipped == 0
    assert ds.genres == UPSTREAM_GENRES
    assert np.all(ds.y.sum(axis=1) >= 1) and np.all(ds.y.sum(axis=1) <= 3)
    assert 20 < ds.images.mean() < 235


# ------------------------------------------------------------------------------------ download

def _import_download():
    spec = importlib.util.spec_from_file_location("download", REPO / "data" / "download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


download = _import_download()


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving byte strings, optionally honouring Range."""

    def __init__(self, files: dict, ranges: bool = True):
        self.files, self.ranges, self.requests = files, ranges, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if server.ranges and self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].rstrip("-"))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _dataset_zip(tmp_path) -> bytes:
    """The upstream archive's shape: one top-level folder holding train.csv, Images/ and the
    three sample posters."""
    root = make_dataset(tmp_path / "zip-src")
    Image.new("RGB", (8, 8)).save(root / "endgame.jpg")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Movies-Poster_Dataset-master/", "")
        for f in sorted(root.rglob("*")):
            zf.write(f, f"Movies-Poster_Dataset-master/{f.relative_to(root).as_posix()}")
    return buf.getvalue()


def test_download_and_unpack(tmp_path, capsys):
    archive = _dataset_zip(tmp_path)
    dest = tmp_path / "data" / "posters"
    with _Server({"/master.zip": archive}) as server:
        assert download.main(["--url", server.url + "/master.zip", "--dest", str(dest)]) == 0
    assert (dest / "train.csv").is_file() and (dest / "samples" / "endgame.jpg").is_file()
    assert len(list((dest / "Images").glob("*.jpg"))) == len(MODES)
    assert find_dataset(dest) == dest and len(read_labels(dest / "train.csv").ids) == len(MODES)
    out = capsys.readouterr().out
    assert f"{len(MODES) + 2} rows" in out and f"{len(MODES)} posters" in out
    assert not list(dest.parent.glob("*.zip*"))   # the archive is removed once unpacked


@pytest.mark.parametrize("ranges, part, first_request", [
    (True, 100_000, "bytes=100000-"),   # resumed: only the rest is sent
    (False, 7, "bytes=7-"),             # the server ignores Range: start over
    (True, 300_001, "bytes=300001-"),   # longer than the file (416): start over
])
def test_download_resumes_or_restarts_a_partial_file(tmp_path, ranges, part, first_request):
    body = np.random.default_rng(0).bytes(300_000)
    target = tmp_path / "archive.zip"
    part_file = tmp_path / "archive.zip.part"
    part_file.write_bytes((body + b"x")[:part] if ranges else b"garbage")
    with _Server({"/a.zip": body}, ranges=ranges) as server:
        download.download(server.url + "/a.zip", target, progress=False)
    assert target.read_bytes() == body and not part_file.exists()
    assert server.requests[0] == ("/a.zip", first_request)
    assert len(server.requests) == (2 if part > len(body) else 1)


@pytest.mark.parametrize("member", ["../evil.txt", "/abs.txt", "C:/windows.txt", "a/../../b.txt",
                                    "symlink"])
def test_safe_extract_refuses_escaping_members(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/train.csv", "Id,Genre,Action\n")
        if member == "symlink":
            link = zipfile.ZipInfo("top/Images/link.jpg")
            link.external_attr = 0o120777 << 16
            zf.writestr(link, "/etc/passwd")
        else:
            zf.writestr(member, "owned")
    with pytest.raises(download.DownloadError, match="refus"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_download_command_line_errors(tmp_path, capsys):
    with _Server({}) as server:
        status = download.main(["--url", f"{server.url}/missing.zip", "--dest", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "404" in err and "Traceback" not in err
    assert download.main(["--url", "http://example.com/x.zip", "--dest", str(tmp_path / "p")]) == 2
    assert "https" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        download.main(["--no-such-option"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1
