"""`w2v convert SRC DST`: never writes into the source, refuses a foreign non-empty DST unless
--overwrite, and says what it did in clean lines (the rule:
w2v.loading.check_convert_destination)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from w2v.convert.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_w2v_dir

from tests.helpers import HF_FIXTURES
from tests.pipeline.cli_runs import tiny_checkpoint
from w2v.cli import main
from w2v.errors import UsageError
from w2v.loading import check_convert_destination, convert

HF_SOURCE = HF_FIXTURES / "wav2vec2-layer"  # has no preprocessor_config.json: one notice


def _digest(root: Path) -> dict[str, str]:
    """Every file below ``root`` (or ``root`` itself) with a hash of its bytes."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(argv, capsys) -> tuple[int, list[str]]:
    code = main(["convert", *map(str, argv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Warning" not in err, err
    return code, err.splitlines()


@pytest.fixture
def hf_src(tmp_path) -> Path:
    return Path(shutil.copytree(HF_SOURCE, tmp_path / "hf"))


def test_converts_into_a_new_directory_with_one_line_per_notice(tmp_path, hf_src, capsys):
    code, lines = _run([hf_src, tmp_path / "out"], capsys)
    assert code == 0 and is_w2v_dir(tmp_path / "out")
    assert lines[-1].startswith(f"wrote {tmp_path / 'out'} (wav2vec2, ")
    (notice,) = lines[:-1]
    assert notice.startswith("w2v convert: ") and "preprocessor_config.json" in notice
    code, lines = _run([hf_src, tmp_path / "quiet", "--quiet"], capsys)
    assert code == 0 and len(lines) == 1 and lines[0].startswith("wrote ")


@pytest.mark.parametrize(
    "dst, word",
    [(".", "is the source"), ("sub", "lies inside the source"), ("..", "contains the source")],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_never_writes_into_the_source(tmp_path, hf_src, capsys, dst, word, overwrite):
    """DST == SRC, DST inside SRC, SRC inside DST: refused even with --overwrite."""
    before = _digest(tmp_path)
    argv = [hf_src, hf_src / dst] + (["--overwrite"] if overwrite else [])
    code, lines = _run(argv, capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("w2v convert: error: output ") and word in lines[0]
    assert str(hf_src) in lines[0]
    assert _digest(tmp_path) == before and not (hf_src / "sub").exists()


def test_a_symlink_to_the_source_is_the_source(tmp_path, hf_src, capsys):
    (tmp_path / "link").symlink_to(hf_src)
    before = _digest(hf_src)
    code, lines = _run([hf_src, tmp_path / "link", "--overwrite"], capsys)
    assert code == 2 and "is the source" in lines[0]
    assert _digest(hf_src) == before


def test_a_fairseq_file_inside_dst_is_refused(tmp_path, capsys):
    src = tmp_path / "models" / "w.pt"
    src.parent.mkdir()
    shutil.copy(HF_FIXTURES.parent / "fairseq" / "wav2vec2_default.pt", src)
    code, lines = _run([src, tmp_path / "models"], capsys)
    assert code == 2 and "contains the source" in lines[0]
    assert sorted(p.name for p in src.parent.iterdir()) == ["w.pt"]


def test_foreign_non_empty_dst_needs_overwrite(tmp_path, hf_src, capsys):
    dst = tmp_path / "busy"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    (dst / CONFIG_FILE).write_text('{"model_type": "not w2v"}')
    code, lines = _run([hf_src, dst], capsys)
    assert code == 2 and len(lines) == 1
    assert str(dst) in lines[0] and "not empty" in lines[0] and "--overwrite" in lines[0]
    assert not (dst / WEIGHTS_FILE).exists() and (dst / CONFIG_FILE).read_text().startswith('{"m')

    code, lines = _run([hf_src, dst, "--overwrite"], capsys)
    assert code == 0 and is_w2v_dir(dst)
    assert (dst / "notes.txt").read_text() == "mine"  # nothing else touched


def test_previous_output_is_replaced_and_empty_dirs_are_fine(tmp_path, hf_src, capsys):
    previous = tiny_checkpoint(tmp_path / "previous")
    code, _ = _run([hf_src, previous], capsys)
    assert code == 0 and str(hf_src) in (previous / CONFIG_FILE).read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".model.safetensors.1234.w2vtmp").write_bytes(b"left by a killed run")
    assert _run([hf_src, empty], capsys)[0] == 0


def test_dst_that_is_a_file_and_missing_src(tmp_path, hf_src, capsys):
    (tmp_path / "file").write_text("x")
    code, lines = _run([hf_src, tmp_path / "file", "--overwrite"], capsys)
    assert code == 2 and "not a directory" in lines[0]
    code, lines = _run([tmp_path / "nope", tmp_path / "out"], capsys)
    assert code == 2 and lines == [
        f"w2v convert: error: {tmp_path / 'nope'}: no such file or directory"
    ]
    assert not (tmp_path / "out").exists()


def test_the_rule_is_a_library_function(tmp_path, hf_src):
    check_convert_destination(hf_src, tmp_path / "new")
    with pytest.raises(UsageError, match="is the source"):
        check_convert_destination(hf_src, hf_src, overwrite=True)
    with pytest.raises(UsageError, match="not empty"):
        check_convert_destination(hf_src, Path(HF_SOURCE).parent)
    ckpt = convert(hf_src, tmp_path / "out")
    assert ckpt.notices and is_w2v_dir(tmp_path / "out")


def test_the_result_line_escapes_the_destination(tmp_path, capsys):
    src = tiny_checkpoint(tmp_path / "src")
    dst = tmp_path / "out\x1b[2J\nwrote"
    code, lines = _run([src, dst], capsys)
    assert code == 0 and is_w2v_dir(dst)
    [line] = lines
    assert "\x1b" not in line and line.startswith("wrote ") and "out\\x1b[2J\\nwrote" in line
