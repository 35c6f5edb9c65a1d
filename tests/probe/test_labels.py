"""Label tables (CSV, TSV, Kaldi) and joining their keys to embedded inputs."""

from __future__ import annotations

import pytest

from w2v.errors import UsageError
from w2v.probe.labels import column_kind, join, read_table

PATHS = ["/data/spk1/a.wav", "/data/spk2/a.wav", "/data/spk2/b.flac"]


def test_csv_and_tsv(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("speaker,path,age\nS1,/data/spk1/a.wav,31\nS2,spk2/a.wav,NA\n")
    t = read_table(p)
    assert t.key_column == "path"
    assert t.keys == ["/data/spk1/a.wav", "spk2/a.wav"]
    assert t.columns == {"speaker": ["S1", "S2"], "age": ["31", None]}
    assert t.lines == [2, 3]
    q = tmp_path / "l.tsv"
    q.write_text("utt\temotion\nb\thappy\n")
    assert read_table(q).columns == {"emotion": ["happy"]}


def test_kaldi_utt2spk(tmp_path):
    p = tmp_path / "utt2spk"
    p.write_text("a spk1\n\nb spk2\n")
    t = read_table(p)
    assert t.keys == ["a", "b"]
    assert t.columns == {"spk": ["spk1", "spk2"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,x\na.wav,1\nb.wav\n", r"l\.csv line 3: 1 fields, the header has 2"),
        ("path,x\na.wav,1\na.wav,2\n", r"line 3: key 'a.wav' repeats line 2"),
        ("path,x\n,1\n", r"line 2: empty key"),
        ("path,path\n", r"line 1: column names must be non-empty and distinct"),
    ],
)
def test_bad_rows_are_named(tmp_path, text, message):
    p = tmp_path / "l.csv"
    p.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_table(p)


def test_kinds():
    assert column_kind(["1", "2.5", None, "-3e2"]) == "number"
    assert column_kind(["1", "two"]) == "class"
    assert column_kind(["1", "inf"]) == "class"


def test_join_by_path_suffix_and_stem():
    joined = join(["/data/spk1/a.wav", "spk2/a", "b", "missing", "c.wav"], PATHS, "labels")
    assert joined.items == [0, 1, 2, -1, -1]
    assert joined.unmatched == ["missing", "c.wav"]
    assert joined.unlabelled == []
    partial = join(["b.flac"], PATHS, "labels")
    assert partial.unlabelled == [0, 1]


def test_join_refuses_ambiguous_and_double_keys():
    with pytest.raises(UsageError, match="key 'a.wav' matches more than one embedded input"):
        join(["a.wav"], PATHS, "labels")
    with pytest.raises(UsageError, match="keys 'b' and 'spk2/b.flac' name the same input"):
        join(["b", "spk2/b.flac"], PATHS, "labels")
    with pytest.raises(UsageError, match="no key of labels matches an embedded input"):
        join(["x", "y"], PATHS, "labels")
