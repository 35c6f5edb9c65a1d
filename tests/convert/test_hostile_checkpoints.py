"""Hostile checkpoints: crafted files must be refused with one line, never run code, crash,
hang, or eat memory.

Every file is generated here from pickle opcodes (nothing runnable is committed).
Loads run in a child process so that a segfault or a runaway allocation fails the
test instead of killing pytest; the child reports, per file, the error and the time,
and its own peak memory (``tests.helpers.PEAK_RSS_CODE``). An address-space limit keeps a
regression from taking the machine down with it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from w2v.convert import checkpoint
from w2v.convert.safe_pickle import to_plain
from w2v.convert.safe_pickle.torch_file import read_torch_file

from tests.helpers import FAIRSEQ_FIXTURES, HF_FIXTURES, PEAK_RSS_CODE, REPO
from w2v.errors import CheckpointError, shown

MAX_RSS_MB = 600  # the child's peak; importing torch and w2v alone takes about 250 MB
MAX_SECONDS = 10  # per file, inside the child (imports excluded)
ADDRESS_SPACE = 6 << 30  # a regression hits MemoryError instead of the machine's memory

RUNNER = f"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
from w2v.convert.load import read_checkpoint
from w2v.errors import CheckpointError
for path in sys.argv[1:]:
    print(json.dumps({{"start": path}}), flush=True)
    t = time.perf_counter()
    try:
        read_checkpoint(path)
        error, kind = None, None
    except CheckpointError as e:
        error, kind = str(e), type(e).__name__
    print(json.dumps({{"path": path, "error": error, "type": kind,
                      "seconds": time.perf_counter() - t}}), flush=True)
"""


# Runs "-c CODE args" or "-m MODULE args" and reports the child's own peak memory last.
_WRAPPER = (
    PEAK_RSS_CODE
    + """
import atexit, runpy, sys
atexit.register(lambda: print(f"PEAK_KB {peak_rss_kb()}", file=sys.stderr, flush=True))
kind, target, *rest = sys.argv[1:]
if kind == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<child>", "exec"), {"__name__": "__main__"})
"""
)


def _run(args: list[str], tmp_path: Path) -> tuple[int, str, str, float]:
    """Run ``python args`` → (exit status, stdout, stderr, the child's peak RSS in MB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, cwd=REPO, env=env
    )
    lines = proc.stderr.splitlines()
    peak = [float(x.split()[1]) / 1024 for x in lines if x.startswith("PEAK_KB ")]
    err = "\n".join(x for x in lines if not x.startswith("PEAK_KB "))
    return proc.returncode, proc.stdout, err, peak[-1] if peak else float("inf")


def load_all(paths: list[Path], tmp_path: Path) -> dict[str, dict]:
    """Load each path with ``read_checkpoint`` in one child → path → its report."""
    code, out, err, rss = _run(["-c", RUNNER, *map(str, paths)], tmp_path)
    lines = [json.loads(line) for line in out.splitlines()]
    started = [x["start"] for x in lines if "start" in x]
    assert code == 0, (
        f"child died ({code}) loading {started[-1] if started else '?'}: {err[-2000:]}"
    )
    assert "Traceback" not in err, err[-2000:]
    assert rss < MAX_RSS_MB, f"peak memory {rss:.0f} MB"
    reports = {x["path"]: x for x in lines if "path" in x}
    for report in reports.values():
        assert report["seconds"] < MAX_SECONDS, report
    return reports


def assert_refused(report: dict, path: Path, *words: str) -> None:
    """A one-line CheckpointError naming ``path``, containing ``words``, terminal-safe."""
    msg = report["error"]
    assert msg is not None, f"{path} was accepted"
    assert report["type"] in ("CheckpointError", "HubError")
    assert str(path) in msg and "\n" not in msg and "\x1b" not in msg, msg
    assert len(msg) < 1000, msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


def cli_convert(src: Path, tmp_path: Path) -> tuple[int, str]:
    dst = tmp_path / "converted"
    code, _, err, rss = _run(["-m", "w2v.cli", "convert", str(src), str(dst)], tmp_path)
    assert rss < MAX_RSS_MB and "Traceback" not in err, err[-2000:]
    assert not dst.exists()
    return code, err


# --------------------------------------------------------------------------
# Writing pickles by hand


def g(module: str, name: str) -> bytes:
    """GLOBAL opcode."""
    return b"c" + f"{module}\n{name}\n".encode()


def u(text: str) -> bytes:
    """BINUNICODE opcode."""
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def b(data: bytes) -> bytes:
    """BINBYTES opcode."""
    return b"B" + struct.pack("<I", len(data)) + data


def i(n: int) -> bytes:
    """An int opcode (LONG1 for big ones)."""
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def as_file(tmp_path: Path, name: str, payload: bytes) -> Path:
    """A .pt whose pickle is ``payload`` (PROTO 2 ... STOP): read as the legacy format's first
    pickle, the payload runs before anything else is checked."""
    path = tmp_path / name
    path.write_bytes(b"\x80\x02" + payload + b".")
    return path


def as_zip(tmp_path: Path, name: str, payload: bytes, records=None, sizes=None) -> Path:
    """A torch zip checkpoint with ``payload`` as data.pkl; ``sizes`` overrides declared sizes."""
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02" + payload + b".")
        for key, data in (records or {}).items():
            zf.writestr(f"archive/data/{key}", data)
    if sizes:  # patch the declared (uncompressed) size in both headers
        data = bytearray(path.read_bytes())
        for key, size in sizes.items():
            name_bytes = f"archive/data/{key}".encode()
            for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
                at = data.find(sig)
                while at >= 0:
                    name_at = at + (30 if sig == b"PK\x03\x04" else 46)
                    if data[name_at : name_at + len(name_bytes)] == name_bytes:
                        data[at + off : at + off + 4] = struct.pack("<I", size)
                    at = data.find(sig, at + 1)
        path.write_bytes(bytes(data))
    return path


def fairseq_plain(name: str = "wav2vec2_default") -> dict:
    obj = read_torch_file(FAIRSEQ_FIXTURES / f"{name}.pt")
    return {"cfg": to_plain(obj["cfg"]), "model": dict(obj["model"])}


def fairseq_with(tmp_path: Path, name: str, **model_cfg) -> Path:
    ckpt = fairseq_plain()
    ckpt["cfg"]["model"].update(model_cfg)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def hf_dir(tmp_path: Path, name: str, config=None, files=None) -> Path:
    """A copy of the tiny wav2vec2 CTC fixture with config fields or files replaced."""
    d = tmp_path / name
    shutil.copytree(HF_FIXTURES / "wav2vec2-ctc", d)
    (d / "reference.safetensors").unlink()
    if config is not None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(config)
        (d / "config.json").write_text(json.dumps(cfg))
    for file, text in (files or {}).items():
        (d / file).write_text(text)
    return d


# --------------------------------------------------------------------------
# 1. numpy dtypes: only plain numeric ones, never numpy's own __setstate__

DTYPE = g("numpy", "dtype")
# numpy's own pickle of dtype("O"): the object dtype, flags 63
OBJECT_DTYPE = (
    call(DTYPE, u("O8"), b"\x89\x88")
    + b"("
    + i(3)
    + u("|")
    + b"NNN"
    + i(-1)
    + i(-1)
    + i(63)
    + b"tb"
)
# a void dtype given an object field by BUILD, with flags 0 so numpy thinks it holds no
# objects: an array of it reads object pointers out of the file's bytes
EVIL_DTYPE = (
    call(DTYPE, u("V8"), b"\x89\x88")
    + b"("
    + i(3)
    + u("|")
    + b"N"
    + u("f0")
    + b"\x85"
    + b"}"
    + u("f0")
    + b"("
    + OBJECT_DTYPE
    + i(0)
    + b"ts"
    + i(8)
    + i(1)
    + i(0)
    + b"tb"
)


def _array(dtype: bytes, raw: bytes) -> bytes:
    reconstruct = call(
        g("numpy.core.multiarray", "_reconstruct"),
        g("numpy", "ndarray"),
        b"(" + i(0) + b"\x85",
        b"C\x01b",
    )
    return (
        reconstruct[:-1]
        + b"R"
        + b"("
        + i(1)
        + b"("
        + i(1)
        + b"\x85"
        + dtype
        + b"\x89"
        + b(raw)
        + b"tb"
    )


NUMPY_ATTACKS = {
    "dtype_build_object_field": EVIL_DTYPE,
    "dtype_object": call(DTYPE, u("O8"), b"\x89\x88"),
    "dtype_structured_spec": call(DTYPE, b"((" + u("a") + u("O") + b"tl", b"\x89\x88"),
    "dtype_subarray": call(DTYPE, u("(1000000000,)f4"), b"\x89\x88"),
    "array_of_objects": _array(OBJECT_DTYPE, b"A" * 8),
    "array_of_evil_dtype": _array(EVIL_DTYPE, b"A" * 8),
    "scalar_of_objects": call(g("numpy.core.multiarray", "scalar"), OBJECT_DTYPE, b(b"A" * 8)),
    "build_on_scalar": call(
        g("numpy.core.multiarray", "scalar"), call(DTYPE, u("f8"), b"\x89\x88"), b(b"\0" * 8)
    )
    + b"}"
    + u("x")
    + i(1)
    + b"sb",
}


def test_numpy_dtype_attacks_are_refused(tmp_path):
    paths = [as_file(tmp_path, f"{name}.pt", p) for name, p in NUMPY_ATTACKS.items()]
    reports = load_all(paths, tmp_path)
    for path in paths:
        assert_refused(reports[str(path)], path, "refusing to load" if "build" in path.name else "")
        assert "numpy" in reports[str(path)]["error"] or "state" in reports[str(path)]["error"]


def test_plain_numpy_data_still_loads(tmp_path):
    import numpy as np

    obj = {"a": np.arange(6, dtype=">i4").reshape(2, 3), "s": np.float16(1.5), "b": np.bool_(True)}
    for proto in (2, 5):
        path = tmp_path / f"np{proto}.pt"
        path.write_bytes(pickle.dumps(obj, protocol=proto))
        with open(path, "rb") as f:
            from w2v.convert.safe_pickle import load

            back = load(f)
        np.testing.assert_array_equal(back["a"], obj["a"])
        assert back["a"].dtype.itemsize == 4 and back["s"] == 1.5 and back["b"]


# --------------------------------------------------------------------------
# 2. nesting, bounded by the unpickler itself


def _levels(level: bytes, count: int) -> bytes:
    """``level`` repeated: each wraps the object on top of the stack, kept in memo slot 0."""
    return (b"q\x000" + level) * count  # BINPUT 0, POP, then the level (BINGET 0 inside)


NESTING_ATTACKS = {
    # a 250,000-deep tuple used as a dict key: hashing it overflowed the C stack
    "deep_tuple_key": b"})" + b"\x85" * 250_000 + b"Ns",
    "deep_frozenset": b")" + _levels(b"(h\x00\x91", 50_000),
    "deep_reduce": b")" + _levels(g("builtins", "tuple") + b"h\x00\x85\x85R", 5_000),
    "deep_record": b")" + _levels(g("fairseq.x", "C") + b"h\x00\x85R", 5_000),
    "deep_state": b")"
    + _levels(g("argparse", "Namespace") + b")\x81}" + u("a") + b"h\x00sb", 5_000),
    # lists built bottom-up: push them all, then APPEND each into the one below
    "deep_list": b"]" * 200_000 + b"a" * 199_999,
    "deep_marks": b"(" * 1_000_000 + b")",
}


def test_deep_nesting_is_refused_without_recursion(tmp_path):
    paths = [as_file(tmp_path, f"{name}.pt", p) for name, p in NESTING_ATTACKS.items()]
    reports = load_all(paths, tmp_path)
    for path in paths:
        assert_refused(reports[str(path)], path, "deep")


# --------------------------------------------------------------------------
# 3. resource bombs from tiny files

BOMBS = {
    "bytearray_size": call(g("builtins", "bytearray"), i(6_000_000_000)),
    "bytes_size": call(g("__builtin__", "bytes"), i(3_000_000_000)),
    "newobj_bytes": g("builtins", "bytes") + b"(" + i(3_000_000_000) + b"t\x81",
    "bytearray8_length": b"\x96" + struct.pack("<Q", 6_000_000_000),
    "binbytes8_length": b"\x8e" + struct.pack("<Q", 6_000_000_000),
    "frame_length": b"\x95" + struct.pack("<Q", 6_000_000_000),
    "unicode8_length": b"\x8d" + struct.pack("<Q", 6_000_000_000),
    "size_from_bytes": call(g("torch", "Size"), b(b"\1" * (2 << 20))),
    "tuple_from_bytes": call(g("builtins", "tuple"), b(b"\1" * (2 << 20))),
    "set_from_text": call(g("builtins", "set"), u("x" * (2 << 20))),
    "record_classes": b"".join(g("fairseq.m", f"C{n}") + b"0" for n in range(5000)) + b"N",
}


def _billion_laughs(levels: int = 40) -> list:
    node: list = ["lol"]
    for _ in range(levels):
        node = [node, node]
    return node


def test_resource_bombs_are_refused_fast(tmp_path):
    paths = [as_file(tmp_path, f"{name}.pt", p) for name, p in BOMBS.items()]
    # shared references in cfg expanding to 2**40 values when converted to plain data
    laughs = fairseq_plain()
    laughs["cfg"]["model"]["lol"] = _billion_laughs()
    paths.append(tmp_path / "billion_laughs.pt")
    torch.save(laughs, paths[-1])
    # conv_feature_layers multiplying to 10**9 layers
    paths.append(
        fairseq_with(tmp_path, "conv_layers.pt", conv_feature_layers="[(1,1,1)]*1000*1000*1000")
    )
    # a tensor of 10**12 elements over a storage of 1 (stride 0): copying it allocates terabytes
    expanded = fairseq_plain()
    expanded["model"]["encoder.layer_norm.weight"] = torch.zeros(1).expand(10**12)
    paths.append(tmp_path / "expanded.pt")
    torch.save(expanded, paths[-1])
    reports = load_all(paths, tmp_path)
    for path in paths:
        assert_refused(reports[str(path)], path)


def test_declared_sizes_beyond_the_file_are_refused_before_allocating(tmp_path):
    def pid(rest: bytes) -> bytes:  # a persistent id naming a storage of 1.5e9 floats
        return (
            b"("
            + u("storage")
            + g("torch", "FloatStorage")
            + u("0")
            + u("cpu")
            + i(1_500_000_000)
            + rest
        )

    storage = call(
        g("torch._utils", "_rebuild_tensor_v2"),
        pid(b"tQ"),
        i(0),
        b"(" + i(1_500_000_000) + b"t",
        b"(" + i(1) + b"t",
        b"\x89",
        g("collections", "OrderedDict") + b")R",
    )
    payload = b"}" + u("model") + b"}" + u("w") + storage + b"ss"
    zipped = as_zip(
        tmp_path, "zip_member.pt", payload, {"0": b"\0" * 16}, sizes={"0": 6_000_000_000 % 2**32}
    )
    # legacy stream: the storage is allocated when the pickle names it, before its data
    legacy = tmp_path / "legacy_numel.pt"
    head = b"".join(
        pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    legacy_storage = storage.replace(pid(b"tQ"), pid(b"NtQ"))  # the legacy id has a view slot
    legacy.write_bytes(
        head + b"\x80\x02" + b"}" + u("model") + b"}" + u("w") + legacy_storage + b"ss."
    )
    reports = load_all([zipped, legacy], tmp_path)
    assert_refused(reports[str(zipped)], zipped, "more than the whole file")
    assert_refused(reports[str(legacy)], legacy, "more than the rest of the file")


ABSURD = [10**5, 10**9]


@pytest.mark.parametrize("n", ABSURD)
def test_absurd_config_sizes_are_refused_before_building(tmp_path, n):
    paths = [
        fairseq_with(tmp_path, "layers.pt", encoder_layers=n),
        fairseq_with(tmp_path, "dim.pt", encoder_embed_dim=n),
        fairseq_with(tmp_path, "heads.pt", encoder_attention_heads=n),
        fairseq_with(tmp_path, "ffn.pt", encoder_ffn_embed_dim=n),
        fairseq_with(
            tmp_path, "layers999.pt", encoder_layers=999
        ),  # under the bound, not the weights
        hf_dir(tmp_path, "hf_layers", {"num_hidden_layers": n}),
        hf_dir(tmp_path, "hf_hidden", {"hidden_size": n, "num_attention_heads": 1}),
        hf_dir(tmp_path, "hf_heads", {"num_attention_heads": n}),
        hf_dir(tmp_path, "hf_conv", {"conv_dim": [n] * 7}),
        hf_dir(tmp_path, "hf_vocab", {"vocab_size": n}),
        hf_dir(tmp_path, "hf_layers999", {"num_hidden_layers": 999}),
    ]
    w2v_dir = tmp_path / "w2v"
    _w2v_copy(w2v_dir)
    meta = json.loads((w2v_dir / "config.json").read_text())
    meta["config"]["num_layers"] = min(n, 999)
    (w2v_dir / "config.json").write_text(json.dumps(meta))
    paths.append(w2v_dir)
    reports = load_all(paths, tmp_path)
    for path in paths:
        assert_refused(reports[str(path)], path)


def _w2v_copy(d: Path) -> None:
    from w2v.convert.load import read_checkpoint

    checkpoint.save(read_checkpoint(HF_FIXTURES / "wav2vec2-ctc"), d)


# --------------------------------------------------------------------------
# 4. legacy storages never read


def _legacy_without_data(path: Path, obj) -> None:
    """torch's legacy stream format with the storage key list emptied: the file is as long as
    the data would be, but no storage is ever read."""

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, torch.storage.TypedStorage):
                return ("storage", torch.FloatStorage, str(id(o)), "cpu", o._size(), None)
            return None

    with open(path, "wb") as f:
        for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(x, f, protocol=2)
        P(f, protocol=2).dump(obj)
        pickle.dump([], f, protocol=2)
        f.write(b"\0" * sum(8 + t.numel() * 4 for t in obj["model"].values()))


def test_storages_without_data_are_refused(tmp_path):
    ckpt = fairseq_plain()
    ckpt["model"] = {k: v.float() for k, v in ckpt["model"].items()}
    path = tmp_path / "unread.pt"
    _legacy_without_data(path, ckpt)
    with pytest.raises(CheckpointError, match="have no data in the file") as e:
        checkpoint_read(path)
    assert str(path) in str(e.value)


def checkpoint_read(path: Path):
    from w2v.convert.load import read_checkpoint

    return read_checkpoint(path)


# --------------------------------------------------------------------------
# 5. shard paths out of the model directory


def _sharded(tmp_path: Path, name: str, shard_name: str, place: Path) -> Path:
    d = hf_dir(tmp_path, name)
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    place.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(place))
    index = {"weight_map": {k: shard_name for k in state}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d


def test_shards_must_stay_inside_the_model_directory(tmp_path):
    outside = tmp_path / "elsewhere" / "x.safetensors"
    dirs = [
        _sharded(tmp_path, "dotdot", "../elsewhere/x.safetensors", outside),
        _sharded(tmp_path, "absolute", str(outside), outside),
    ]
    link = _sharded(tmp_path, "link", "x.safetensors", outside)
    (link / "x.safetensors").symlink_to(outside)
    subdir = _sharded(tmp_path, "subdir", "sub/x.safetensors", outside)
    (subdir / "sub").symlink_to(outside.parent)
    dirs += [link, subdir]
    for d in dirs:
        with pytest.raises(CheckpointError, match="outside the model directory") as e:
            checkpoint_read(d)
        assert str(d / "model.safetensors.index.json") in str(e.value)
    # inside, and a hub snapshot's link into its blobs/, are fine
    ok = _sharded(
        tmp_path, "inside", "part/x.safetensors", tmp_path / "inside" / "part" / "x.safetensors"
    )
    checkpoint_read(ok)
    snapshot = tmp_path / "models--a--b" / "snapshots" / "abc"
    blob = tmp_path / "models--a--b" / "blobs" / "123"
    shutil.copytree(_sharded(tmp_path, "hub", "x.safetensors", blob), snapshot)
    (snapshot / "x.safetensors").symlink_to(blob)
    checkpoint_read(snapshot)


# --------------------------------------------------------------------------
# 6. one-line errors naming the file


def test_broken_side_files_are_one_line_errors(tmp_path):
    cases = {
        hf_dir(tmp_path, "cfg_list", files={"config.json": "[1, 2]"}): "config.json",
        hf_dir(tmp_path, "cfg_deep", files={"config.json": "[" * 100_000}): "config.json",
        hf_dir(tmp_path, "heads0", {"num_attention_heads": 0}): "num_heads",
        hf_dir(tmp_path, "groups0", {"num_conv_pos_embedding_groups": 0}): "pos_conv_groups",
        hf_dir(tmp_path, "negative", {"hidden_size": -32}): "hidden_size",
        hf_dir(tmp_path, "neg_conv", {"conv_dim": [-1] * 7}): "conv_dim",
        hf_dir(tmp_path, "arch", {"architectures": [1]}): "architectures",
        hf_dir(tmp_path, "arch_str", {"architectures": "Wav2Vec2ForCTC"}): "architectures",
        hf_dir(tmp_path, "model_type", {"model_type": ["wav2vec2"]}): "model_type",
        hf_dir(tmp_path, "pre", files={"preprocessor_config.json": "[]"}): "preprocessor",
        hf_dir(
            tmp_path, "pre_norm", files={"preprocessor_config.json": '{"do_normalize": "no"}'}
        ): "do_normalize",
        hf_dir(tmp_path, "vocab", files={"vocab.json": '{"a": 0, "b": "1"}'}): "vocab.json",
        hf_dir(tmp_path, "vocab_list", files={"vocab.json": '["a"]'}): "vocab.json",
    }
    for weight_map in ('["a"]', '{"a": 5}', '"x"'):
        d = hf_dir(tmp_path, f"wm{len(cases)}")
        (d / "model.safetensors").unlink()
        (d / "model.safetensors.index.json").write_text(f'{{"weight_map": {weight_map}}}')
        cases[d] = "weight_map"
    bin_dir = hf_dir(tmp_path, "bin_values")
    state = load_file(str(bin_dir / "model.safetensors"))
    (bin_dir / "model.safetensors").unlink()
    torch.save({**state, "extra": 3, "more": [1]}, bin_dir / "pytorch_model.bin")
    cases[bin_dir] = "pytorch_model.bin"
    for version in ("2", 0, 99, None, [1]):
        d = tmp_path / f"w2v_version_{len(cases)}"
        _w2v_copy(d)
        meta = json.loads((d / "config.json").read_text())
        meta["format_version"] = version
        (d / "config.json").write_text(json.dumps(meta))
        cases[d] = "format version" if version == 99 else "format_version"
    for field, value in (("num_layers", 1), ("hidden_size", 64)):
        d = tmp_path / f"w2v_disagree_{field}"
        _w2v_copy(d)
        meta = json.loads((d / "config.json").read_text())
        meta["config"][field] = value
        (d / "config.json").write_text(json.dumps(meta))
        cases[d] = "model.safetensors"
    d = tmp_path / "w2v_list"
    _w2v_copy(d)
    (d / "config.json").write_text('[{"format": "w2v"}]')
    cases[d] = ""
    reports = load_all(list(cases), tmp_path)
    for path, word in cases.items():
        assert_refused(reports[str(path)], path, word)


def test_full_disk_is_one_line_error(tmp_path, monkeypatch):
    from w2v.convert.load import read_checkpoint

    ckpt = read_checkpoint(HF_FIXTURES / "wav2vec2-ctc")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(CheckpointError, match="No space left") as e:
        checkpoint.save(ckpt, tmp_path / "out")
    assert str(tmp_path / "out") in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert not list((tmp_path / "out").glob(".*"))  # no temporary left behind


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")
def test_full_disk_on_a_small_tmpfs(tmp_path):
    from w2v.convert.load import read_checkpoint

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(CheckpointError) as e:
            checkpoint.save(read_checkpoint(HF_FIXTURES / "wav2vec2-ctc"), mnt / "out")
        assert str(mnt / "out") in str(e.value) and "\n" not in str(e.value)
    finally:
        subprocess.run(["umount", str(mnt)])


# --------------------------------------------------------------------------
# 7. terminal safety, and the CLI's exit status

SCREEN = "\n\x1b[2J\x1b[Hwrote ok (wav2vec2, 12 layers)\n"


def test_text_from_files_is_escaped_and_cut():
    assert shown(SCREEN) == "\\n\\x1b[2J\\x1b[Hwrote ok (wav2vec2, 12 layers)\\n"
    assert len(shown("k" * 10**7)) == 200
    assert shown("caf\xe9 \u202e") == "caf\xe9 \\u202e"
    assert str(CheckpointError("a\nb")) == "a\\nb"


def test_cli_refuses_hostile_files_with_exit_2_and_one_safe_line(tmp_path):
    stack_global = u("os" + SCREEN) + u("system" + SCREEN) + b"\x93"
    files = [
        as_file(tmp_path, "global.pt", stack_global),
        as_file(tmp_path, "dtype.pt", EVIL_DTYPE),
        as_file(tmp_path, "bytearray.pt", BOMBS["bytearray_size"]),
        _sharded(tmp_path, "escape", "../x" + SCREEN, tmp_path / "x.safetensors"),
        hf_dir(tmp_path, "model_type", {"model_type": SCREEN}),
    ]
    key = fairseq_plain()
    key["model"]["w" + SCREEN * 1000] = torch.zeros(1)
    files.append(tmp_path / "key.pt")
    torch.save(key, files[-1])
    for path in files:
        code, err = cli_convert(path, tmp_path)
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and "\x1b" not in err and str(path) in err, err
        assert len(err) < 1500, err
