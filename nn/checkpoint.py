"""Checkpoints: named arrays plus JSON metadata in one .npz file, saved atomically, no pickle.

Layout: a zip of ``<name>.npy`` members (what ``np.savez`` writes, so ``np.load`` opens it too),
one per array, plus ``__meta__.npy``, the UTF-8 bytes (uint8) of
``{"format_version": FORMAT_VERSION, "meta": meta}``.

Why this shape: a pickle can run any code when loaded, so arrays are stored as plain .npy and
read with ``allow_pickle=False``; metadata (architecture, genre names, input size, training
state) is JSON for the same reason. A crash while saving must never cost the last good
checkpoint, so the file is written beside the target and moved onto it in one step.
"""

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message names the file and the problem."""


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` ({name: ndarray}) and ``meta`` (JSON-serialisable dict) to ``path``.

    The file goes exactly to ``path`` (no suffix is added). It is written to a temporary file in
    the same directory, flushed and fsynced, then renamed onto ``path`` with ``os.replace``, which
    is atomic: readers see the old checkpoint or the new one, never half of one. If anything
    fails, the temporary file is removed and an existing checkpoint at ``path`` is untouched.
    """
    path = os.fspath(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta must be a dict, got {type(meta).__name__}")
    payload = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if not isinstance(name, str) or not name or name == META_KEY:
            raise CheckpointError(f"{path}: invalid array name {name!r}")
        if array.dtype.hasobject:
            raise CheckpointError(
                f"{path}: array {name!r} has dtype object; checkpoints hold only plain numeric "
                "arrays (object arrays would need pickle to load)"
            )
        payload[name] = array
    try:
        text = json.dumps({"format_version": FORMAT_VERSION, "meta": meta})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: meta is not JSON-serialisable: {exc}") from None
    payload[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def write_zip(f):
        # Stored, not deflated: trained weights barely compress and the big ones are ~1 GB.
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in payload.items():
                with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    write_atomically(path, write_zip)


def write_atomically(path, write):
    """Call write(f) on a new temporary binary file beside path, make it durable, and move it
    onto path in one step: a crash leaves the old file or the new one, never part of one, and
    two writers never share a temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.NamedTemporaryFile(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp", delete=False
    )
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        # NamedTemporaryFile is private (0600); give the file the mode open() would.
        # Reading the umask means setting it; the window is two calls long.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp.name, 0o666 & ~umask)
        os.replace(tmp.name, path)
    except BaseException:
        os.unlink(tmp.name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable; not every platform lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint``. -> (arrays {name: ndarray}, meta dict).

    Never unpickles: an array of Python objects is refused, as is anything that is not a
    complete checkpoint of a known format version, each with a CheckpointError naming the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            signature = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open checkpoint: {exc.strerror or exc}") from None
    if signature != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not an .npz checkpoint (no zip signature at the start)")

    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            file_size = os.path.getsize(path)
            for info in archive.infolist():
                name, ext = os.path.splitext(info.filename)
                if ext != ".npy":
                    raise CheckpointError(f"{path}: unexpected member {info.filename!r}")
                try:
                    arrays[name] = _read_array(archive, info, file_size)
                except ValueError as exc:
                    # Includes numpy's refusal of object arrays, raised before any unpickling.
                    raise CheckpointError(f"{path}: array {name!r} cannot be read: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint: {exc}") from None

    meta = _read_meta(path, arrays.pop(META_KEY, None))
    return arrays, meta


def _read_array(archive, info, file_size):
    """One .npy member as an array, once its header is shown to describe the member's bytes.

    numpy allocates the whole array before reading any data, so the shape in a header is
    checked first: its data must be exactly the rest of the member, and the member no larger
    than the whole file (an uncompressed member, as save_checkpoint writes, never is). A few
    hundred bytes claiming a shape of 10**12 would otherwise be a terabyte allocation.
    Raises ValueError.
    """
    if info.file_size > file_size:
        raise ValueError(f"it claims {info.file_size} bytes, more than the whole file holds "
                         f"({file_size}); save_checkpoint stores arrays uncompressed")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} is not read here")
        shape, _, dtype = read_header(member)
        data_size = info.file_size - member.tell()
        if not dtype.hasobject and math.prod(shape) * dtype.itemsize != data_size:
            raise ValueError(f"its header claims shape {shape} {dtype}, but {data_size} bytes "
                             "of data follow")
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_meta(path, raw):
    """Decode and version-check the ``__meta__`` array; return the user's meta dict."""
    if raw is None:
        raise CheckpointError(f"{path}: no {META_KEY!r} entry; not written by save_checkpoint")
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"expected 1-D uint8, found {raw.dtype} {raw.shape}")
        envelope = json.loads(raw.tobytes().decode("utf-8"))
        version = envelope["format_version"]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:  # [[[[... nested too deep
        raise CheckpointError(f"{path}: invalid {META_KEY!r} entry: {exc}") from None
    # The version comes first: a future format may arrange the rest differently.
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, but this nn reads version "
            f"{FORMAT_VERSION}"
        )
    meta = envelope.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: invalid {META_KEY!r} entry: meta is not a JSON object")
    return meta


def check_meta(meta, expected, path):
    """Raise CheckpointError unless ``meta[field] == value`` for every field of ``expected``.

    Use it before loading weights into a model: e.g. expected = {"architecture": [...],
    "genres": [...], "input_size": [350, 350, 3]}. Expected values go through JSON first, as
    stored meta did, so a tuple matches the list it was saved as.
    """
    for field, value in expected.items():
        value = json.loads(json.dumps(value))
        if field not in meta:
            raise CheckpointError(f"{path}: meta has no field {field!r} (expected {value!r})")
        if meta[field] != value:
            raise CheckpointError(
                f"{path}: meta field {field!r} differs: expected {value!r}, found {meta[field]!r}"
            )
