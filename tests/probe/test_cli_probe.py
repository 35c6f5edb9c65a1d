"""``w2v probe`` end to end: ``w2v embed`` on generated tones, then the probe, as a user runs
them; the outputs, the plots, a rerun, ``--model`` caching, a frame task, the errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO
from tests.pipeline.cli_runs import tiny_checkpoint
from tests.probe.synthetic import write_embeddings
from w2v.cli import main
from w2v.pipeline.outputs import MANIFEST

PNG = b"\x89PNG\r\n\x1a\n"
TONES = {"low": 300.0, "mid": 1200.0, "high": 4000.0}
SPEAKERS = 4  # each synthetic speaker: its own loudness and second harmonic


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """18 tones of 0.5 s (3 pitches × 6, spread over 4 speakers), their labels, a checkpoint."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    rows = []
    for i in range(18):
        name = list(TONES)[i % 3]
        spk = i % SPEAKERS
        hz = TONES[name] * (1 + 0.02 * rng.standard_normal())
        wave = (0.1 + 0.1 * spk) * np.sin(2 * np.pi * hz * t)
        wave += 0.05 * spk * np.sin(4 * np.pi * hz * t) + 0.01 * rng.standard_normal(t.size)
        path = root / "audio" / f"spk{spk}" / f"tone{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), 16000)
        rows.append((f"spk{spk}/tone{i:02d}.wav", name, f"{hz:.1f}", f"spk{spk}"))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "pitch", "hz", "speaker"])
        w.writerows(rows)
        w.writerow(["spk9/absent.wav", "low", "300", "spk9"])  # matches no input
    ckpt = tiny_checkpoint(root / "ckpt")
    return root, ckpt


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _results(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_embed_then_probe(corpus, tmp_path, capsys):
    root, ckpt = corpus
    emb = tmp_path / "emb"
    code, _, err = _run(capsys, "embed", root / "audio", "--model", ckpt, "--out", emb, "--quiet")
    assert code == 0, err
    out = tmp_path / "probe"
    args = ["probe", emb, "--labels", root / "labels.csv", "--out", out, "--group-by", "speaker"]
    args += ["--folds", "3", "--reference", "logmel"]
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    assert "1 label key(s) match no embedded input (e.g. 'spk9/absent.wav')" in err

    rows = _results(out / "results.csv")
    assert {"label", "layer", "metric", "mean", "std", "control_mean"} <= set(rows[0])
    layers = ["0", "1", "2"]  # the tiny model: transformer input and 2 layers
    by_label = {}
    for r in rows:
        by_label.setdefault(r["label"], {}).setdefault(r["layer"], set()).add(r["metric"])
    assert by_label == {
        "pitch": dict.fromkeys(layers, {"accuracy", "macro_f1", "uar"}),
        "hz": dict.fromkeys(layers, {"r2", "pearson", "ccc"}),
    }
    for r in rows:
        assert r["control_mean"] != "" and 0.0 <= float(r["std"])
        if r["metric"] == "accuracy":
            assert 0.0 <= float(r["mean"]) <= 1.0
    # pitch is in the audio: the best layer decodes it far above chance (1/3)
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]["pitch"]["accuracy"]
    top = max(float(r["mean"]) for r in rows if r["metric"] == "accuracy")
    assert best["mean"] == pytest.approx(top, abs=1e-6) and top > 0.6
    assert str(best["layer"]) in layers
    assert summary["labels"]["pitch"]["classes"] == {"high": 6, "low": 6, "mid": 6}
    assert summary["counts"]["unmatched_labels"] == 1
    assert summary["settings"]["seed"] == 0 and summary["settings"]["group_by"] == "speaker"
    assert len(summary["layer_weights"]["pitch"]) == 3
    assert sum(summary["layer_weights"]["pitch"]) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(np.diag(summary["cka"]["matrix"]), 1.0)
    assert {"w2v", "scikit-learn", "torch"} <= set(summary["versions"])
    reference = summary["reference"]
    assert reference["name"] == "logmel" and reference["layers"] == [0, 1, 2]
    assert all(0.0 < v <= 1.0 for v in reference["cka"])
    assert len(reference["svcca"]) == 3 and all(0.0 < v <= 1.0 for v in reference["svcca"])
    names = ("probe_pitch.png", "probe_hz.png", "cka.png", "layer_weights.png", "cka_reference.png")
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
    assert "pitch (class" in stdout and "best layer" in stdout

    # the same inputs and seed give the same results.csv, byte for byte
    code, _, err = _run(capsys, *args[:5], tmp_path / "again", *args[6:])
    assert code == 0, err
    assert (tmp_path / "again" / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_model_mode_extracts_once(corpus, tmp_path, capsys):
    root, ckpt = corpus
    out = tmp_path / "probe"
    args = ["probe", "--model", ckpt, root / "audio", "--labels", root / "labels.csv"]
    args += ["--out", out, "--folds", "3", "--no-layer-weights", "--label", "pitch"]
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    assert "embeddings: 18 ok, 0 failed, 0 skipped" in err
    manifest = (out / "embeddings" / "mean" / MANIFEST).read_bytes()
    first = (out / "results.csv").read_bytes()
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    assert "embeddings: 0 ok, 0 failed, 18 skipped" in err  # nothing extracted again
    assert (out / "embeddings" / "mean" / MANIFEST).read_bytes() == manifest
    assert (out / "results.csv").read_bytes() == first


def test_frame_task_from_textgrids(tmp_path, capsys):
    """Frames of layer 1 carry their phone (one direction per phone), layer 0 is noise."""
    rng = np.random.default_rng(0)
    phones = ["a", "b", "c"]
    directions = rng.standard_normal((3, 8)) * 3
    arrays, grids = [], tmp_path / "grids"
    grids.mkdir()
    for u in range(8):
        bounds = [0.0, 0.3, 0.62, 1.0]  # 3 phones, then frames past 1 s are unlabelled
        ids = rng.permutation(3)
        frames = 52  # 52 frames: centres up to 1.0325 s
        x = rng.standard_normal((2, frames, 8)).astype(np.float32)
        text = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "0", "1.04", "<exists>"]
        text += ["1", '"IntervalTier"', '"phone"', "0", "1.04", "3"]
        for k in range(3):
            text += [str(bounds[k]), str(bounds[k + 1]), f'"{phones[ids[k]]}"']
            t = np.arange(frames) * 0.02 + 0.0125
            inside = (t >= bounds[k]) & (t < bounds[k + 1])
            x[1, inside] += directions[ids[k]].astype(np.float32)
        (grids / f"utt{u:05d}.TextGrid").write_text("\n".join(text) + "\n")
        arrays.append(x)
    write_embeddings(tmp_path / "emb", arrays, [0, 1], pool="none")
    out = tmp_path / "out"
    code, stdout, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        grids,
        "--task",
        "frame",
        "--out",
        out,
        "--folds",
        "4",
    )
    assert code == 0, err
    assert "phone: 16 frame(s) without a label left out" in err  # 2 per utterance past 1 s
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["phone"]["accuracy"]["layer"] == 1
    assert summary["labels"]["phone"]["labelled_frames"] == 8 * 50
    rows = {(r["layer"], r["metric"]): r for r in _results(out / "results.csv")}
    assert float(rows["1", "accuracy"]["mean"]) > 0.9
    assert float(rows["1", "accuracy"]["control_mean"]) < 0.6  # random type labels
    assert summary["labels"]["phone"]["groups"] == 8  # grouped by utterance

    # grouped by speaker from a Kaldi utt2spk file: 4 speakers of 2 utterances each
    (tmp_path / "utt2spk").write_text("".join(f"utt{u:05d} spk{u // 2}\n" for u in range(8)))
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        grids,
        "--task",
        "frame",
        "--out",
        tmp_path / "by_speaker",
        "--folds",
        "4",
        "--groups",
        tmp_path / "utt2spk",
        "--no-layer-weights",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "by_speaker" / "summary.json").read_text())
    assert summary["labels"]["phone"]["groups"] == 4
    assert summary["best"]["phone"]["accuracy"]["layer"] == 1
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        grids,
        "--task",
        "frame",
        "--out",
        tmp_path / "x",
        "--group-by",
        "speaker",
    )
    assert code == 2 and "give --groups FILE" in err


def test_errors_are_one_line(tmp_path, capsys):
    write_embeddings(tmp_path / "emb", [np.zeros((1, 3), np.float32)] * 4, [0])
    labels = tmp_path / "l.csv"
    labels.write_text("path,x\nutt00000.wav,a\nutt00001.wav\n")
    code, _, err = _run(
        capsys, "probe", tmp_path / "emb", "--labels", labels, "--out", tmp_path / "o"
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"w2v probe: error: {labels} line 3: 1 fields, the header has 2"
    ]
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        labels,
        "--out",
        tmp_path / "o",
        "--task",
        "frame",
    )
    assert code == 2 and "--task frame needs frame outputs (w2v embed --pool none)" in err


def test_missing_extra_says_what_to_install(tmp_path):
    code = (
        "import importlib.util as u\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'sklearn' else real(name, *a)\n"
        "import sys\n"
        "from w2v.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "probe", str(tmp_path), "--labels", "x.csv", "--out", "o"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "w2v probe: error: w2v probe needs scikit-learn, not installed here: "
        'pip install "w2v[probe]"'
    )


def test_compare_two_models(tmp_path, capsys):
    """Model B's layer j is model A's layer j rotated: the cross-model CKA has ones on its
    diagonal and matches the within-model CKA of A elsewhere."""
    rng = np.random.default_rng(0)
    a = [rng.standard_normal((3, 6)).astype(np.float32) for _ in range(40)]
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    b = [(x @ q).astype(np.float32) for x in a]
    write_embeddings(tmp_path / "a", a, [0, 1, 2])
    write_embeddings(tmp_path / "b", b, [0, 1, 2])
    labels = tmp_path / "l.csv"
    labels.write_text("path,c\n" + "".join(f"utt{i:05d}.wav,{i % 2}\n" for i in range(40)))
    spk = tmp_path / "utt2spk"
    spk.write_text("".join(f"utt{i:05d} s{i % 4}\n" for i in range(40)))
    out = tmp_path / "out"
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "a",
        "--labels",
        labels,
        "--out",
        out,
        "--compare",
        tmp_path / "b",
        "--folds",
        "2",
        "--no-layer-weights",
        "--classify",
        "c",
        "--groups",
        spk,
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    cross = np.array(summary["compare"]["cka"])
    within = np.array(summary["cka"]["matrix"])
    np.testing.assert_allclose(np.diag(cross), 1.0, atol=1e-5)
    np.testing.assert_allclose(cross, within, atol=1e-5)
    assert within[0, 1] < 0.9
    assert (out / "cka_compare.png").read_bytes().startswith(PNG)
    assert summary["labels"]["c"]["kind"] == "class"  # numbers, forced to classes
    assert summary["labels"]["c"]["groups"] == 4  # from utt2spk


def test_missing_and_unmatched_are_counted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_embeddings(
        tmp_path / "emb",
        [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(12)],
        [0, 1],
        failed=1,
    )
    rows = [f"utt{i:05d}.wav,{'ab'[i % 2] if i != 3 else 'NA'}" for i in range(11)]
    (tmp_path / "l.csv").write_text("path,c\n" + "\n".join([*rows, "gone.wav,a", "gone2.wav,b"]))
    out = tmp_path / "out"
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        tmp_path / "l.csv",
        "--out",
        out,
        "--folds",
        "2",
        "--no-layer-weights",
    )
    assert code == 0, err
    assert "1 failed embedding entry skipped" in err
    assert "2 label key(s) match no embedded input (e.g. 'gone.wav', 'gone2.wav')" in err
    assert "1 embedded input(s) have no labels" in err  # utt00011
    assert "c: 1 missing value(s) left out" in err  # utt00003
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["c"]["n"] == 10 and summary["labels"]["c"]["missing"] == 1
    assert summary["counts"]["failed_entries"] == 1
    assert summary["counts"]["unmatched_labels"] == 2
    # too few items of a class for the folds: one line, exit 2
    (tmp_path / "l.csv").write_text("path,c\nutt00000.wav,a\nutt00001.wav,a\nutt00002.wav,b\n")
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        tmp_path / "l.csv",
        "--out",
        out,
        "--folds",
        "3",
    )
    assert code == 2 and "cannot make 3 folds of 3 items: n_splits=3 cannot be greater" in err
    (tmp_path / "l.csv").write_text(
        "path,c\n" + "".join(f"utt{i:05d}.wav,{i // 5}\n" for i in range(6))
    )
    code, _, err = _run(
        capsys,
        "probe",
        tmp_path / "emb",
        "--labels",
        tmp_path / "l.csv",
        "--out",
        out,
        "--folds",
        "5",
        "--classify",
        "c",
    )
    assert code == 2 and "a training fold holds a single class" in err


def test_model_mode_frame_task(corpus, tmp_path, capsys):
    """--task frame --model: frames embedded with every layer (--pool none), labelled from a
    CTM by time: each tone's first 0.24 s is "on", a gap, then "off" from 0.30 s."""
    root, ckpt = corpus
    ctm = tmp_path / "halves.ctm"
    ctm.write_text(
        "".join(f"tone{i:02d} 1 0.00 0.24 on\ntone{i:02d} 1 0.30 0.20 off\n" for i in range(18))
    )
    out = tmp_path / "probe"
    args = ["probe", "--model", ckpt, root / "audio", "--labels", ctm, "--task", "frame"]
    args += ["--out", out, "--folds", "3", "--no-layer-weights"]
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["embeddings"]["pool"] == "none"
    # 24 frames of 0.5 s: centres 12.5 ... 472.5 ms; "on" holds 12 (to 232.5 ms), the gap
    # [240, 300) ms holds 3, "off" holds 9 (312.5 ms on)
    assert summary["labels"]["halves"]["classes"] == {"off": 18 * 9, "on": 18 * 12}
    assert summary["labels"]["halves"]["missing"] == 18 * 3
    assert (out / "embeddings" / "frames" / MANIFEST).is_file()
