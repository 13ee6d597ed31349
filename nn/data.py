"""Getting posters into arrays: labels from the CSV, pixels from the image files, a disk cache,
a train/validation split and minibatches.

Shapes used throughout: N posters, G genres (25 here), images uint8 (N, H, W, 3) in HWC order,
a minibatch x float32 (B, H*W*3) in [0, 1] and y float32 (B, G).

    data = PosterDataset(find_dataset(), size=350)        # decodes once, then reads the cache
    train_idx, val_idx = train_val_split(len(data))
    for x, y in DataLoader(data.images, data.y, train_idx, batch_size=33):
        ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .checkpoint import write_atomically

__all__ = [
    "DataError", "Labels", "read_labels", "load_image", "load_images", "default_workers",
    "PosterDataset",
    "find_dataset", "train_val_split", "DataLoader", "to_float",
]

# The upstream file's columns: Id, Genre (a text list such as "['Comedy', 'Drama']"), then one
# 0/1 column per genre. The genres themselves are read from the header, never hardcoded.
ID_COLUMN, TEXT_COLUMN = "Id", "Genre"
REPO_ROOT = Path(__file__).resolve().parents[1]


class DataError(ValueError):
    """Bad input data (a CSV row, an image file, a missing dataset). The message names the file
    and, where there is one, the row, so a command-line tool can print it as one line."""


def _check_policy(name: str, value: str) -> None:
    if value not in ("stop", "skip"):
        raise ValueError(f"{name} must be 'stop' or 'skip', got {value!r}")


# ----------------------------------------------------------------------------------- labels

@dataclass
class Labels:
    """The CSV's labels after cleaning.

    ids: N poster ids; y: uint8 (N, G) one-hot genres; genres: the G genre names in file order;
    lines: the 1-based line in the CSV of each kept row (the header is line 1);
    n_duplicates_dropped: exact repeats removed; skipped: one message per row left out by
    on_bad_row="skip".
    """

    ids: list[str]
    y: np.ndarray
    genres: list[str]
    lines: list[int]
    n_duplicates_dropped: int
    skipped: list[str]


# An id becomes a file name (Images/<Id>.jpg), so it must not be able to climb out of Images/.
_SAFE_ID = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"


def read_labels(csv_path, on_bad_row: str = "stop", expected_genres=None) -> Labels:
    """Read and check the labels CSV (Id, [Genre,] then one 0/1 column per genre).

    Exact duplicate rows are dropped and counted. Bad rows (an unusable id, a label other than
    0/1, an id repeated with different labels) raise DataError naming the file and line with
    on_bad_row="stop", or are left out and described in Labels.skipped with "skip".
    expected_genres: if given, the header's genre columns must be exactly these, in this order.
    """
    _check_policy("on_bad_row", on_bad_row)
    csv_path = Path(csv_path)
    try:
        # Everything as text: "N/A" is a genre name and must not become NaN, and a label such
        # as "2" or "yes" must reach the check below instead of being coerced. Blank lines are
        # kept as empty rows so that row i is always line i + 2.
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        raise DataError(f"{csv_path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: the file is empty (expected a header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path}: not a readable CSV ({e})") from None

    columns = list(table.columns)
    if ID_COLUMN not in columns:
        raise DataError(f"{csv_path}: line 1: no {ID_COLUMN!r} column (header: {columns})")
    genres = [c for c in columns if c not in (ID_COLUMN, TEXT_COLUMN)]
    if not genres:
        raise DataError(f"{csv_path}: line 1: no genre columns after {ID_COLUMN}/{TEXT_COLUMN}")
    if expected_genres is not None and genres != list(expected_genres):
        missing = [g for g in expected_genres if g not in genres]
        extra = [g for g in genres if g not in expected_genres]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "order differs"
        raise DataError(f"{csv_path}: line 1: genre columns differ from the expected: {detail}")

    table["_line"] = np.arange(len(table)) + 2
    table = table[(table[columns] != "").any(axis=1)]   # blank lines carry no row
    if len(table) == 0:
        raise DataError(f"{csv_path}: no data rows after the header")

    skipped: list[str] = []

    def bad(rows: pd.DataFrame, reasons) -> None:
        """Stop at the first bad row, or record every one of them and drop them."""
        messages = [f"{csv_path}: line {line}: {why}" for line, why in zip(rows["_line"], reasons)]
        if messages and on_bad_row == "stop":
            raise DataError(messages[0])
        skipped.extend(messages)

    unsafe = table[~table[ID_COLUMN].str.fullmatch(_SAFE_ID)]
    bad(unsafe, [f"unusable id {s!r} (allowed: letters, digits, '.', '_', '-')"
                 for s in unsafe[ID_COLUMN]])
    table = table.drop(unsafe.index)

    values = table[genres].to_numpy(dtype=object)
    not_binary = ~np.isin(values, ["0", "1"])
    bad_rows = not_binary.any(axis=1)
    reasons = []
    for row_values, row_mask in zip(values[bad_rows], not_binary[bad_rows]):
        column = int(np.argmax(row_mask))
        reasons.append(f"label {genres[column]}={row_values[column]!r}, expected 0 or 1")
    bad(table[bad_rows], reasons)
    table = table[~bad_rows]

    # An exact duplicate (same id, same labels) is harmless: keep its first row and count it.
    # The Genre text column is ignored here: the 0/1 columns are the labels.
    duplicate = table.duplicated(subset=[ID_COLUMN, *genres])
    n_duplicates = int(duplicate.sum())
    table = table[~duplicate]

    # The same id with different labels cannot be resolved: name its lines, drop every copy.
    conflicting = table[table.duplicated(subset=[ID_COLUMN], keep=False)]
    lines_of = conflicting.groupby(ID_COLUMN)["_line"].agg(list)
    bad(conflicting, [f"id {i} has different labels on lines {lines_of[i]}"
                      for i in conflicting[ID_COLUMN]])
    table = table.drop(conflicting.index)

    return Labels(
        ids=table[ID_COLUMN].tolist(),
        y=(table[genres].to_numpy(dtype=object) == "1").astype(np.uint8),
        genres=genres,
        lines=table["_line"].tolist(),
        n_duplicates_dropped=n_duplicates,
        skipped=skipped,
    )


# ----------------------------------------------------------------------------------- images

def _as_size(size) -> tuple[int, int]:
    """An int means a square; otherwise (width, height), the order Pillow uses."""
    width, height = (size, size) if isinstance(size, int) else size
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return int(width), int(height)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "RGB". Transparent pixels become white, as on a printed page."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (Pillow opens some 16-bit files as 32-bit "I"): its convert() would clip
        # every value above 255 to white, so scale 0..65535 to 0..255 instead, rounding.
        grey = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        img = Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(path, size=(350, 350), resample=Image.BILINEAR) -> np.ndarray:
    """Decode one image file of any format and mode into resized RGB pixels.

    size: (width, height) or an int for a square. Returns uint8 (height, width, 3).
    The format comes from the file's content, not its name (a PNG called .jpg is fine); an
    animated image gives its first frame. Raises DataError("<path>: <reason>") for a missing,
    empty, damaged, truncated or non-image file and for a decompression bomb.
    """
    width, height = _as_size(size)
    try:
        with Image.open(path) as img:
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too, so
            # the outcome does not depend on the caller's warning filters.
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and img.width * img.height > limit:
                raise Image.DecompressionBombError(
                    f"{img.width} x {img.height} pixels exceeds the limit of {limit}")
            # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that
            # much smaller (twice as fast for 64 x 64; no effect at 350 x 350).
            img.draft("RGB", (width, height))
            img.load()   # decode now, inside the try, so a truncated file is caught here
            return np.asarray(_to_rgb(img).resize((width, height), resample))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        empty = os.path.getsize(path) == 0
        reason = "empty file (0 bytes)" if empty else "not an image (unknown format)"
        raise DataError(f"{path}: {reason}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: refused as a possible decompression bomb: {e}") from None
    except Exception as e:
        # Damaged files surface from Pillow's many decoders as OSError, SyntaxError, ValueError,
        # EOFError, struct.error, ...: all of them mean "this file is not a usable image".
        raise DataError(f"{path}: damaged or unreadable image ({type(e).__name__}: {e})") from None


def default_workers() -> int:
    """The number of cores this process may use (in a container, maybe fewer than the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_into(paths, out, size, resample, workers, stop: bool, progress: bool) -> dict[int, str]:
    """Decode paths[i] into out[i] for every i, in parallel. Returns {i: reason} for the bad
    images, whose rows are zeroed; with stop=True it returns at the first bad one (in order)."""
    # Threads, not processes: Pillow releases the GIL while it decodes and resizes, so threads
    # scale across cores (on 2 cores, 1.8x one worker at 350 x 350: benchmarks/bench_load.py),
    # while a process pool was about 20% slower than the threads, because every decoded image
    # must be pickled back to the parent. Threads also write straight into `out`, which may be
    # a memmap on disk.
    def decode(i: int) -> str | None:
        try:
            out[i] = load_image(paths[i], size, resample)
        except DataError as e:
            out[i] = 0
            return str(e)
        return None

    errors: dict[int, str] = {}
    pool = ThreadPoolExecutor(workers or default_workers())
    try:
        with tqdm(total=len(paths), unit="img", desc="decoding", disable=not progress) as bar:
            for i, error in enumerate(pool.map(decode, range(len(paths)))):
                bar.update()
                if error is not None:
                    errors[i] = error
                    if stop:
                        break
    finally:
        # On a stop (or Ctrl-C) drop the queued work instead of decoding it all first.
        pool.shutdown(wait=True, cancel_futures=True)
    return errors


def load_images(paths, size=(350, 350), workers=None, on_bad_image="stop", out=None,
                progress=True, resample=Image.BILINEAR):
    """Decode many image files in parallel.

    size: (width, height) or an int. Returns (images uint8 (N, height, width, 3), ok bool (N,)).
    out: an array of that shape to fill (e.g. a np.memmap), so the stack never exists twice.
    on_bad_image: "stop" raises DataError naming the first bad file; "skip" zeroes its row and
    marks it False in `ok` (ok.sum() posters were loaded).
    """
    _check_policy("on_bad_image", on_bad_image)
    width, height = _as_size(size)
    paths = list(paths)
    shape = (len(paths), height, width, 3)
    if out is None:
        out = np.zeros(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {shape}, got {out.dtype} {out.shape}")
    errors = _decode_into(paths, out, (width, height), resample, workers,
                          stop=on_bad_image == "stop", progress=progress)
    if errors and on_bad_image == "stop":
        raise DataError(next(iter(errors.values())))
    ok = np.ones(len(paths), bool)
    ok[list(errors)] = False
    return out, ok


# ------------------------------------------------------------------------------ the dataset

def find_dataset(arg=None) -> Path:
    """The poster folder: `arg` (a --data option), else $POSTERS_DIR, else <repo>/data/posters.
    It must hold train.csv and Images/; otherwise DataError says how to get it."""
    if arg is not None:
        root, origin = Path(arg), "--data"
    elif os.environ.get("POSTERS_DIR"):
        root, origin = Path(os.environ["POSTERS_DIR"]), "$POSTERS_DIR"
    else:
        root, origin = REPO_ROOT / "data" / "posters", "the default location"
    if (root / "train.csv").is_file() and (root / "Images").is_dir():
        return root
    raise DataError(
        f"{root} ({origin}) has no train.csv and Images/: download the posters with "
        f"`python data/download.py` (into data/posters), or pass --data DIR or set POSTERS_DIR "
        f"to a folder that holds them")


# Reopening a cached dataset must prove that no poster changed. Hashing every file's bytes
# took most of a cached reload (182 MB: 0.2 s from the page cache, about 1 s from disk; 6,900
# posters/s, 8.9x decoding), so, like git's index, remember each file's digest under its stat
# fingerprint and read only the files whose fingerprint changed: a stat costs about 3 us.
_DIGESTS_FORMAT = "nn.data file digests v1"
# A file rewritten within one timestamp tick of being hashed (filesystems tick every few ms, some
# every 1-2 s) keeps its fingerprint, so, as git does with "racily clean" entries, a digest is
# only remembered for a file last changed (mtime, or ctime: e.g. a copy that keeps an old mtime)
# this long before its hashing began.
_RACY_NS = 2_000_000_000


def _file_digests(paths, memo: Path) -> list[str | None]:
    """The sha256 hex digest of each file's bytes (None for a missing or unreadable file).

    Reuses the digest remembered in the JSON file `memo` for a path whose (size, mtime_ns,
    ctime_ns, inode) is unchanged, hashes the others, then rewrites `memo` atomically if anything
    differs. The memo is only a shortcut: when it is absent, damaged or of another format, or
    cannot be written, every file is hashed.
    """
    try:
        saved = json.loads(memo.read_text())
        known = {name: tuple(entry) for name, entry in saved["files"].items()
                 if len(entry) == 5 and isinstance(entry[4], str)}
        if saved["format"] != _DIGESTS_FORMAT:
            known = {}
    except Exception:   # whatever is wrong with it (truncated, foreign, hand-edited): hash again
        known = {}
    started = time.time_ns()
    digests, remembered = [], {}
    for path in paths:
        name = str(path)
        try:
            st = os.stat(path)   # before reading: a change after this alters the fingerprint
            stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            entry = known.get(name, ())
            if entry[:4] != stamp:
                entry = (*stamp, hashlib.sha256(Path(path).read_bytes()).hexdigest())
        except OSError:
            digests.append(None)   # decoding will report it; a later fix changes the cache key
            continue
        digests.append(entry[4])
        # A reused entry passed the racy test when it was remembered; a new one must pass now.
        if entry == known.get(name) or max(st.st_mtime_ns, st.st_ctime_ns) < started - _RACY_NS:
            remembered[name] = entry
    if remembered != known:
        text = json.dumps({"format": _DIGESTS_FORMAT, "files": remembered}).encode()
        with contextlib.suppress(OSError):   # e.g. a read-only cache folder: hash next time too
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(memo, lambda f: f.write(text))
    return digests


def _cache_key(csv_bytes: bytes, ids, digests, size, resample) -> str:
    """A hash of everything the cached pixels depend on: the CSV's bytes, each poster's id and
    the sha256 of its file's bytes (from _file_digests; None for a missing file), the size and
    the resampling filter. File sizes and times never enter it: touching a poster makes
    _file_digests read it again, but the cache still fits."""
    h = hashlib.sha256(f"nn.data cache v2 size={size} resample={int(resample)}\n".encode())
    h.update(hashlib.sha256(csv_bytes).digest())
    for id_, digest in zip(ids, digests):
        h.update(f"{id_}\n{digest or '<missing>'}\n".encode())
    return h.hexdigest()


def _default_cache_dir() -> Path:
    # Not inside the dataset folder: that may be read-only (and it is not ours to fill).
    return Path(os.environ.get("NN_CACHE_DIR") or Path.home() / ".cache" / "nn-posters")


class PosterDataset:
    """The posters and their genres, as arrays.

    Attributes: root (the dataset folder), ids (N), genres (G), y float32 (N, G),
    images uint8 (N, H, W, 3), a read-only memmap of the on-disk cache, n_duplicates_dropped,
    skipped (one message per row left out: a bad CSV row or a bad or missing image) and
    n_skipped = len(skipped).

    The first construction decodes every poster into the cache (cache_dir, default
    $NN_CACHE_DIR or ~/.cache/nn-posters); later ones open it in a fraction of a second. The
    cache file's name holds a hash of the CSV, the image files' bytes, the size and the
    resampling filter, so a changed dataset is decoded again, never served stale; the files'
    digests are remembered beside it, so reopening reads only the files that changed.
    size: an int (square) or (width, height). limit: keep only the first `limit` rows.
    """

    def __init__(self, root, size=350, cache_dir=None, limit=None, on_bad_image="stop",
                 on_bad_row="stop", workers=None, progress=True, resample=Image.BILINEAR):
        _check_policy("on_bad_image", on_bad_image)
        self.root = Path(root)
        csv_path = self.root / "train.csv"
        labels = read_labels(csv_path, on_bad_row=on_bad_row)
        n = len(labels.ids) if limit is None else min(limit, len(labels.ids))
        ids, lines = labels.ids[:n], labels.lines[:n]
        width, height = _as_size(size)

        cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        # One family of cache files per dataset folder, size, filter and limit: a rebuild for
        # changed data replaces its family's old 2 GB file instead of piling them up. The
        # family's one file-digest memo, <family>.digests.json, is replaced in place.
        resolved = self.root.resolve()
        folder = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
        how_many = "all" if limit is None else limit
        family = f"posters-{folder}-{width}x{height}-r{int(resample)}-n{how_many}"
        # Plain strings: for 5,432 posters, pathlib's joins (16 ms) cost more than the stats.
        prefix = os.path.join(resolved, "Images", "")
        digests = _file_digests([f"{prefix}{i}.jpg" for i in ids],
                                cache_dir / f"{family}.digests.json")
        key = _cache_key(csv_path.read_bytes(), ids, digests, (width, height), resample)
        npy = cache_dir / f"{family}-{key[:20]}.npy"

        cached = self._open_cache(npy, height, width)
        if cached is None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            paths = [self.root / "Images" / f"{i}.jpg" for i in ids]
            self._build_cache(npy, paths, ids, lines, (width, height), resample, workers,
                              on_bad_image, progress)
            for old in [*cache_dir.glob(f"{family}-*.npy"), *cache_dir.glob(f"{family}-*.json")]:
                if old.stem != npy.stem:
                    with contextlib.suppress(OSError):   # e.g. still open elsewhere (Windows)
                        old.unlink()
            cached = self._open_cache(npy, height, width)
        self.images, kept_ids, image_problems = cached
        if image_problems and on_bad_image == "stop":
            raise DataError(f"{image_problems[0]} (remembered by the cache {npy})")

        rows = {id_: r for r, id_ in enumerate(labels.ids)}
        kept = [rows[i] for i in kept_ids]
        self.ids = kept_ids
        self.genres = labels.genres
        self.y = labels.y[kept].astype(np.float32)
        self.n_duplicates_dropped = labels.n_duplicates_dropped
        self.skipped = labels.skipped + image_problems
        self.n_skipped = len(self.skipped)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def _open_cache(npy: Path, height: int, width: int):
        """(images memmap, kept ids, image problems) from a complete cache, or None."""
        try:
            meta = json.loads(npy.with_suffix(".json").read_text())
            images = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            return None   # absent, or damaged on disk: build it again
        if images.dtype != np.uint8 or images.shape != (len(meta["ids"]), height, width, 3):
            return None
        return images, meta["ids"], meta["skipped"]

    @staticmethod
    def _build_cache(npy, paths, ids, lines, size, resample, workers, on_bad_image, progress):
        """Decode every poster into npy (+ a .json naming the kept ids), atomically: the stack
        is built in a temporary file on disk and renamed only once it is complete."""
        width, height = size
        tmp = npy.with_name(f"{npy.stem}.{os.getpid()}.tmp")
        compact = npy.with_name(f"{npy.stem}.{os.getpid()}.compact.tmp")
        try:
            stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(len(paths), height, width, 3))
            errors = _decode_into(paths, stack, size, resample, workers,
                                  stop=on_bad_image == "stop", progress=progress)
            problems = [f"train.csv line {lines[i]} (id {ids[i]}): {why}"
                        for i, why in errors.items()]
            if problems and on_bad_image == "stop":
                raise DataError(problems[0])
            keep = [i for i in range(len(paths)) if i not in errors]
            stack.flush()
            if problems:
                # Keep only the good rows, so that no zeroed row of a skipped poster can ever
                # be mistaken for a poster.
                _copy_rows(stack, keep, compact)
                del stack
                os.replace(compact, tmp)
            else:
                del stack
            text = json.dumps({"ids": [ids[i] for i in keep], "skipped": problems}).encode()
            write_atomically(npy.with_suffix(".json"), lambda f: f.write(text))
            os.replace(tmp, npy)   # last: the .npy existing means the cache is complete
        finally:
            tmp.unlink(missing_ok=True)
            compact.unlink(missing_ok=True)


def _copy_rows(src: np.ndarray, rows, dst_path: Path) -> None:
    """Write src[rows] to a new .npy file a chunk at a time, never holding the whole stack."""
    dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=src.dtype,
                                    shape=(len(rows), *src.shape[1:]))
    for start in range(0, len(rows), 256):
        dst[start:start + 256] = src[rows[start:start + 256]]
    dst.flush()


# ------------------------------------------------------------------------ split and batches

def train_val_split(n: int, val_fraction: float = 0.25, seed: int = 0):
    """A seeded random split of range(n). Returns (train_idx, val_idx), sorted int arrays;
    the validation part has round(n * val_fraction) items."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def to_float(u8, out=None) -> np.ndarray:
    """uint8 images (B, ...) -> float32 (B, D) in [0, 1], D the product of the other axes.

    Writes into `out` (float32 (B, D)) when given: converting into a reused buffer costs a
    fraction of `u8.astype(np.float32) / 255`, which allocates two fresh arrays per batch.
    Dividing (not multiplying by 1/255) gives exactly the values of that expression.
    """
    flat = u8.reshape(len(u8), -1)
    if out is None:
        out = np.empty(flat.shape, np.float32)
    return np.divide(flat, np.float32(255), out=out, casting="unsafe")


class DataLoader:
    """Minibatches over images[indices]: iterating yields (x float32 (B, H*W*3) in [0, 1],
    y float32 (B, G)), B = batch_size except perhaps the last batch (dropped if drop_last).

    x and y are views of buffers that the next batch overwrites: copy them to keep them.
    Within a batch, rows come in increasing index order (it reads the memmap front to back).
    Each pass over the loader is one epoch and advances `epoch`; with shuffle, epoch k visits
    the indices in an order drawn from (seed, k), so a run resumed with set_epoch(k) sees the
    same batches as an uninterrupted one. images may be a memmap or any uint8 ndarray.
    """

    def __init__(self, images, y, indices=None, batch_size=33, shuffle=True, seed=0,
                 drop_last=False):
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if len(images) != len(y):
            raise ValueError(f"{len(images)} images but {len(y)} label rows")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, np.intp)
        if self.indices.size and not (0 <= self.indices.min() and self.indices.max() < len(images)):
            raise ValueError(f"indices must lie in [0, {len(images)})")
        self.images, self.y = images, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed = seed
        self.epoch = 0
        self._u8 = np.empty((batch_size, *images.shape[1:]), np.uint8)
        self._x = np.empty((batch_size, math.prod(images.shape[1:])), np.float32)
        self._y = np.empty((batch_size, *y.shape[1:]), np.float32)

    def __len__(self) -> int:
        """The number of batches per epoch."""
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch` (to resume a run)."""
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the indices."""
        if not self.shuffle:
            return self.indices
        return np.random.default_rng([self.seed, epoch]).permutation(self.indices)

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order):
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            # Sorted, a batch reads the memmap front to back: fewer seeks, more readahead hits.
            batch = np.sort(order[start:start + self.batch_size])
            b = len(batch)
            for row, i in enumerate(batch):
                self._u8[row] = self.images[i]
            self._y[:b] = self.y[batch]
            yield to_float(self._u8[:b], out=self._x[:b]), self._y[:b]
