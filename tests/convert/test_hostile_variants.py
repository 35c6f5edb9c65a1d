"""Neighbours of the hostile checkpoints of test_hostile_checkpoints: the same classes of
attack reached another way (an integer that is not an int, a zip bomb, keys sharing one
storage, a float that is not finite, a buffer outliving its array, a path in a notice).

Files are generated here, as there; loads that could exhaust memory run in the child process
of :func:`~tests.convert.test_hostile_checkpoints.load_all`.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from w2v.convert.load import read_checkpoint
from w2v.convert.safe_pickle import loads

from tests.convert.test_hostile_checkpoints import (
    DTYPE,
    as_file,
    assert_refused,
    call,
    fairseq_plain,
    g,
    hf_dir,
    i,
    load_all,
    u,
)
from w2v.errors import CheckpointError

# --------------------------------------------------------------------------
# sizes given as integers that are not ints: numpy scalars and arrays have __index__

_INT64 = call(DTYPE, u("i8"), b"\x89\x88")
_NP_SIZE = call(
    g("numpy.core.multiarray", "scalar"),
    _INT64,
    b"B" + struct.pack("<I", 8) + struct.pack("<q", 3_000_000_000),
)


def test_sizes_given_as_numpy_integers_are_refused(tmp_path):
    paths = [
        as_file(tmp_path, "bytearray_np.pt", call(g("builtins", "bytearray"), _NP_SIZE)),
        as_file(tmp_path, "bytes_np.pt", call(g("__builtin__", "bytes"), _NP_SIZE)),
        as_file(
            tmp_path,
            "bytes_np_core.pt",
            call(g("builtins", "bytes"), _NP_SIZE.replace(b"numpy.core", b"numpy._core")),
        ),
    ]
    reports = load_all(paths, tmp_path)
    for path in paths:
        assert_refused(reports[str(path)], path, "with a size")


# --------------------------------------------------------------------------
# zip members that unpack to more than the file: deflate bombs, overlapping entries

_STORAGE = 4 << 20


def _storage_ref(key: str, n: int) -> bytes:
    return call(
        g("torch._utils", "_rebuild_tensor_v2"),
        b"(" + u("storage") + g("torch", "ByteStorage") + u(key) + u("cpu") + i(n) + b"tQ",
        i(0),
        b"(" + i(n) + b"t",
        b"(" + i(1) + b"t",
        b"\x89",
        g("collections", "OrderedDict") + b")R",
    )


def _zip_of(path: Path, count: int, overlap: bool) -> Path:
    """``count`` storages of about 4 MB each: deflated (a few kB each), or stored once and
    named by ``count`` entries whose local headers lie in a row before it, so that each
    member's data runs over the headers after its own and then over the one record."""
    names = [f"archive/data/{k}".encode() for k in range(count)]
    header_sizes = [30 + len(n) for n in names]
    sizes = [sum(header_sizes[k + 1 :]) + _STORAGE if overlap else _STORAGE for k in range(count)]
    refs = b"".join(u(f"w{k}") + _storage_ref(str(k), sizes[k]) + b"s" for k in range(count))
    pickle_bytes = b"\x80\x02}" + u("model") + b"}" + refs + b"s."
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        if not overlap:
            for k in range(count):
                zf.writestr(f"archive/data/{k}", bytes(_STORAGE), zipfile.ZIP_DEFLATED)
            # incompressible padding: every member alone fits in the file
            zf.writestr("archive/pad", os.urandom(_STORAGE))
            return path
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    central_at = struct.unpack("<I", data[end + 16 : end + 20])[0]
    body, central = data[:central_at], data[central_at:end]
    headers: list[bytes] = [b""] * count
    crcs: list[int] = [0] * count
    for k in reversed(range(count)):  # each member's bytes are the later headers + record
        member = b"".join(headers[k + 1 :]) + bytes(_STORAGE)
        crcs[k] = zipfile.crc32(member)
        headers[k] = (
            b"PK\x03\x04"
            + struct.pack(
                "<HHHHHIIIHH", 20, 0, 0, 0, 0, crcs[k], sizes[k], sizes[k], len(names[k]), 0
            )
            + names[k]
        )
    entries, at = b"", len(body)
    for k in range(count):
        entries += (
            b"PK\x01\x02"
            + struct.pack(
                "<HHHHHHIIIHHHHHII",
                20,
                20,
                0,
                0,
                0,
                0,
                crcs[k],
                sizes[k],
                sizes[k],
                len(names[k]),
                0,
                0,
                0,
                0,
                0,
                at,
            )
            + names[k]
        )
        at += header_sizes[k]
    blob = body + b"".join(headers) + bytes(_STORAGE)
    directory = central + entries
    eocd = b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, count + 1, count + 1, len(directory), len(blob), 0
    )
    path.write_bytes(blob + directory + eocd)
    return path


@pytest.mark.parametrize("overlap", [False, True], ids=["deflate", "overlapping"])
def test_zip_members_unpacking_beyond_the_file_are_refused(tmp_path, overlap):
    path = _zip_of(tmp_path / "bomb.pt", 160, overlap)
    assert path.stat().st_size < 8 * _STORAGE  # 160 members of 4 MB: 640 MB unpacked
    report = load_all([path], tmp_path)[str(path)]
    assert_refused(report, path, "more than the whole file")


def test_an_ordinary_zip_checkpoint_still_loads(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save(fairseq_plain(), path)
    read_checkpoint(path)


# --------------------------------------------------------------------------
# many keys over one storage: copying them would cost far more than the file


def test_keys_sharing_one_storage_are_refused(tmp_path):
    big = torch.zeros(1 << 20)
    extra = fairseq_plain()
    for k in range(2000):  # 8 GB when copied (convert writes extra.safetensors)
        extra["model"][f"head{k}.weight"] = big
    tied = fairseq_plain()  # every layer the same tensors as layer 0
    for key in list(tied["model"]):
        if key.startswith("encoder.layers.0."):
            tied["model"][key.replace(".0.", ".1.", 1)] = tied["model"][key]
    paths = [tmp_path / "extra.pt", tmp_path / "tied.pt"]
    for path, ckpt in zip(paths, (extra, tied), strict=True):
        torch.save(ckpt, path)
    reports = load_all(paths, tmp_path)
    for path in paths:
        assert_refused(reports[str(path)], path, "same storage")


# --------------------------------------------------------------------------
# fairseq sizes that are floats but not numbers


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_fairseq_sizes_are_one_line_errors(tmp_path, value):
    for field in ("encoder_layers", "conv_pos", "pos_conv_depth", "crop_seq_to_multiple"):
        ckpt = fairseq_plain()
        ckpt["cfg"]["model"][field] = value
        path = tmp_path / f"{field}.pt"
        torch.save(ckpt, path)
        with pytest.raises(CheckpointError, match=field) as e:
            read_checkpoint(path)
        assert str(path) in str(e.value)


# --------------------------------------------------------------------------
# a buffer view of an array outliving the array's data

_U1 = call(DTYPE, u("u1"), b"\x89\x88")
_N = 1 << 16


def _array_state(n: int) -> bytes:
    raw = b"A" * n
    return b"(" + i(1) + i(n) + b"\x85" + _U1 + b"\x89" + b"B" + struct.pack("<I", n) + raw + b"t"


_FILLED = (
    g("numpy.core.multiarray", "_reconstruct")
    + b"("
    + g("numpy", "ndarray")
    + i(0)
    + b"\x85"
    + b"C\x01b"
    + b"tR"
    + _array_state(_N)
    + b"b"
    + b"q\x01"
)
_REBUILD = b"h\x01" + _array_state(1) + b"b0"
_READ_BACK = call(g("numpy.core.numeric", "_frombuffer"), b"h\x02", _U1, i(_N) + b"\x85", u("C"))

BUFFER_ATTACKS = {
    # READONLY_BUFFER: a memoryview of the array, then BUILD frees the array's data
    "view_then_rebuild": _FILLED + b"\x98q\x020" + _REBUILD + _READ_BACK,
    "rebuild_filled_array": _FILLED + _REBUILD + b"h\x01",
}


@pytest.mark.parametrize("name", list(BUFFER_ATTACKS))
def test_array_data_is_never_freed_under_a_view(name):
    with pytest.raises(CheckpointError, match="not allowed|already has data"):
        try:
            loads(b"\x80\x05" + BUFFER_ATTACKS[name] + b".")
        except Exception as e:  # the unpickler's own errors, as load_torch_file sees them
            raise CheckpointError(str(e)) from None


def test_buffers_of_the_pickles_own_bytes_still_load():
    import numpy as np

    data = b"\x01\x02\x03\x04"
    payload = b"B" + struct.pack("<I", 4) + data + b"\x98"
    out = loads(
        b"\x80\x05"
        + call(g("numpy._core.numeric", "_frombuffer"), payload, _U1, i(4) + b"\x85", u("C"))
        + b"."
    )
    np.testing.assert_array_equal(out, [1, 2, 3, 4])


# --------------------------------------------------------------------------
# notices name their input; a path holding ESC or newlines is escaped like error text


def test_notices_naming_a_hostile_path_are_terminal_safe(tmp_path):
    d = hf_dir(tmp_path, "m\x1b[2J\nwrote ok")  # no preprocessor_config.json: a notice
    ckpt = read_checkpoint(d)
    assert ckpt.notices
    for text in ckpt.notices:
        assert "\x1b" not in text and "\n" not in text, text
