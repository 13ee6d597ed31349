"""Tests for nn.checkpoint: roundtrip, atomic writes, no pickle, and a clear error per bad file."""

import io
import json
import os
import pickle
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from nn.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_meta,
    load_checkpoint,
    save_checkpoint,
)

META = {"architecture": [367500, 512, 256, 128, 64, 25], "genres": ["Action", "N/A"],
        "input_size": [350, 350, 3], "epoch": 3, "lr": 0.05}


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "0.weight": rng.normal(size=(5, 4)).astype(np.float32),
        "0.bias": rng.normal(size=4),  # float64
        "steps": np.array(7, dtype=np.int64),
        "mask": rng.integers(0, 2, size=(3, 2), dtype=np.uint8),
        "fortran": np.asfortranarray(rng.normal(size=(3, 4)).astype(np.float32)),
    }


def _raises_naming(path, match=""):
    return pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + match)


def test_roundtrip_keeps_dtype_shape_values_and_meta(tmp_path):
    path = tmp_path / "model.npz"
    arrays = _arrays()
    save_checkpoint(path, arrays, META)
    loaded, meta = load_checkpoint(path)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    assert meta == META
    assert os.listdir(tmp_path) == ["model.npz"]


def test_file_is_a_plain_npz(tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _arrays(), META)
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["0.weight"], _arrays()["0.weight"])


def test_overwrite_replaces_and_uses_normal_permissions(tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _arrays(0), META)
    save_checkpoint(path, _arrays(1), {**META, "epoch": 4})
    loaded, meta = load_checkpoint(path)
    np.testing.assert_array_equal(loaded["0.bias"], _arrays(1)["0.bias"])
    assert meta["epoch"] == 4
    assert os.listdir(tmp_path) == ["model.npz"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def _crash_halfway_through_second_array(monkeypatch):
    real_write_array = np.lib.format.write_array
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x93NUMPY partial bytes")
            raise OSError("disk full (simulated)")
        real_write_array(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_array)


def _crash_in_fsync(monkeypatch):
    def fsync(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(os, "fsync", fsync)


def _interrupt_during_write(monkeypatch):
    def write_array(fp, array, *args, **kwargs):
        fp.write(b"\x93NUMPY")
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", write_array)


@pytest.mark.parametrize(
    "crash", [_crash_halfway_through_second_array, _crash_in_fsync, _interrupt_during_write]
)
def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _arrays(0), META)
    good = path.read_bytes()
    crash(monkeypatch)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(path, _arrays(1), {**META, "epoch": 4})
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    monkeypatch.undo()
    assert load_checkpoint(path)[1] == META


def test_crash_on_first_save_leaves_nothing(tmp_path, monkeypatch):
    _crash_halfway_through_second_array(monkeypatch)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "model.npz", _arrays(), META)
    assert os.listdir(tmp_path) == []


def test_save_refuses_object_arrays_and_bad_input(tmp_path):
    path = tmp_path / "model.npz"
    with _raises_naming(path, "object"):
        save_checkpoint(path, {"x": np.array([{"a": 1}], dtype=object)}, META)
    with _raises_naming(path, "JSON"):
        save_checkpoint(path, _arrays(), {"shape": np.zeros(2)})
    with _raises_naming(path, "__meta__"):
        save_checkpoint(path, {"__meta__": np.zeros(2)}, META)
    with _raises_naming(path, "dict"):
        save_checkpoint(path, _arrays(), [1, 2])
    assert os.listdir(tmp_path) == []


class _Sentinel:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def _meta_array(envelope):
    return np.frombuffer(json.dumps(envelope).encode(), dtype=np.uint8)


def test_pickled_object_array_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "code_ran"
    path = tmp_path / "evil.npz"
    np.savez(path, weights=np.array([_Sentinel(str(sentinel))], dtype=object),
             __meta__=_meta_array({"format_version": FORMAT_VERSION, "meta": {}}))
    with _raises_naming(path, "'weights'.*allow_pickle"):
        load_checkpoint(path)
    assert not sentinel.exists()
    # The sentinel is live: unpickling the stored payload by hand does run it.
    with zipfile.ZipFile(path) as archive, archive.open("weights.npy") as member:
        major, _ = np.lib.format.read_magic(member)
        read_header = {1: np.lib.format.read_array_header_1_0,
                       2: np.lib.format.read_array_header_2_0}[major]
        read_header(member)   # what follows the .npy header of an object array is a pickle
        pickle.load(member)
    assert sentinel.exists()


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_refused(tmp_path, keep):
    good = tmp_path / "good.npz"
    save_checkpoint(good, _arrays(), META)
    data = good.read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * keep)])
    with _raises_naming(path, "truncated or corrupt"):
        load_checkpoint(path)


def _npy(shape, descr="<f4", data=bytes(16)):
    """A .npy member whose header claims shape, followed by data (whatever its length)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def _write_npz(path, members):
    """Write {name: .npy bytes} and a valid __meta__ member, as np.savez lays them out."""
    meta = io.BytesIO()
    np.lib.format.write_array(meta, _meta_array({"format_version": FORMAT_VERSION, "meta": {}}))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**members, "__meta__": meta.getvalue()}.items():
            archive.writestr(f"{name}.npy", data)


def _load_peak(path, match):
    """Check that loading path raises a CheckpointError naming it; -> peak traced memory."""
    tracemalloc.start()
    try:
        with _raises_naming(path, match):
            load_checkpoint(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", [(10**12,), (2 * 10**9,), (5,)])
def test_a_header_claiming_more_data_than_follows_is_refused_before_allocating(tmp_path, shape):
    """numpy allocates the whole array before reading it: a few hundred bytes claiming 4 TB
    must be refused first, not raise MemoryError (or quietly reserve 8 GB)."""
    path = tmp_path / "lying.npz"
    _write_npz(path, {"w": _npy(shape)})
    claim = re.escape(f"its header claims shape {shape} float32, but 16 bytes of data follow")
    assert _load_peak(path, "'w' cannot be read: " + claim) < 2**20


def test_a_member_larger_than_the_file_is_refused_before_allocating(tmp_path):
    """The zip directory may lie too: a member whose header and zip sizes agree on 3 GB, in a
    file of a few hundred bytes."""
    path = tmp_path / "lying.npz"
    member = _npy((3 * 2**30,), "|u1")
    claimed = len(member) - 16 + 3 * 2**30  # the header, then the data it claims
    _write_npz(path, {"w": member})
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first entry of the directory is w.npy
    struct.pack_into("<II", data, 18, claimed, claimed)  # local header: stored and full size
    struct.pack_into("<II", data, central + 20, claimed, claimed)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("w.npy").file_size == claimed
    assert _load_peak(path, f"'w' cannot be read: it claims {claimed} bytes, more than the "
                            f"whole file holds \\({len(data)}\\)") < 2**20


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", bytes(range(256)) * 4])
def test_non_zip_file_is_refused(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with _raises_naming(path, "not an .npz"):
        load_checkpoint(path)


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "nope.npz"
    with _raises_naming(path, "cannot open"):
        load_checkpoint(path)


def test_missing_or_invalid_meta_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, w=np.zeros(3))
    with _raises_naming(path, "no '__meta__'"):
        load_checkpoint(path)
    np.savez(path, w=np.zeros(3), __meta__=np.frombuffer(b"{not json", dtype=np.uint8))
    with _raises_naming(path, "invalid '__meta__'"):
        load_checkpoint(path)
    np.savez(path, w=np.zeros(3), __meta__=np.zeros(3))
    with _raises_naming(path, "invalid '__meta__'"):
        load_checkpoint(path)
    np.savez(path, w=np.zeros(3), __meta__=_meta_array({"format_version": 1, "meta": [1]}))
    with _raises_naming(path, "invalid '__meta__'"):
        load_checkpoint(path)
    np.savez(path, w=np.zeros(3), __meta__=np.frombuffer(b"[" * 10**5, dtype=np.uint8))
    with _raises_naming(path, "invalid '__meta__'"):  # nested too deep: RecursionError
        load_checkpoint(path)


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "future.npz"
    np.savez(path, w=np.zeros(3), __meta__=_meta_array({"format_version": 2, "stuff": {}}))
    with _raises_naming(path, "format version 2"):
        load_checkpoint(path)


def test_check_meta(tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _arrays(), META)
    _, meta = load_checkpoint(path)
    # Tuples were stored as JSON lists; they still match.
    check_meta(meta, {"input_size": (350, 350, 3), "genres": ["Action", "N/A"]}, path)
    with _raises_naming(path, r"'input_size' differs: expected \[64, 64, 3\], found \[350"):
        check_meta(meta, {"input_size": (64, 64, 3)}, path)
    with _raises_naming(path, "no field 'optimizer'"):
        check_meta(meta, {"optimizer": "sgd"}, path)
