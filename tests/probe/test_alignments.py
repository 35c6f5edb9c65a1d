"""Frame labels from TextGrid and CTM fixtures, hand-computed on the 20 ms grid.

Frame t covers samples [320 t, 320 t + 400) at 16 kHz, so its centre is at
12.5 ms + 20 ms × t: 12.5, 32.5, 52.5, 72.5, 92.5, 112.5, 132.5 ms, ... A centre on a
boundary belongs to the interval starting there; gaps and empty texts are unlabelled."""

from __future__ import annotations

from pathlib import Path

import pytest

from w2v.config import SAMPLE_RATE, Config, num_frames
from w2v.errors import UsageError
from w2v.probe.alignments import frame_centres, frame_labels, read_alignments, read_textgrid

FIXTURES = Path(__file__).parent / "fixtures"


def test_centres_follow_the_model_grid():
    centres = frame_centres(4)
    assert centres.tolist() == [400, 1040, 1680, 2320]  # half samples: 12.5, 32.5, 52.5, 72.5 ms
    # the last frame's window ends inside the input, for any length
    for samples in (400, 719, 720, 16000, 16321):
        t = num_frames(samples) - 1
        assert 320 * t + 400 <= samples
    odd = Config(conv_kernel=(4,), conv_stride=(2,), conv_dim=(8,))
    assert frame_centres(3, odd).tolist() == [4, 8, 12]  # hop 2, field 4: centres 2, 4, 6


def test_textgrid_long_form():
    grid = read_textgrid(FIXTURES / "a.TextGrid")
    assert list(grid) == ["phones", "words"]  # the point tier is skipped
    assert grid["phones"][3] == (0.1, 0.15, 'say "b"')
    frames = num_frames(round(0.15 * SAMPLE_RATE))
    assert frames == 7
    labels = frame_labels(grid["phones"], frames + 2)
    # 12.5 sil | 32.5 on the sil/a boundary: a | 52.5 a | 72.5 on a/"": unlabelled |
    # 92.5 "" | 112.5, 132.5 b | 152.5, 172.5 past the end: unlabelled
    assert labels == ["sil", "a", "a", None, None, 'say "b"', 'say "b"', None, None]
    assert frame_labels(grid["words"], 3) == ["hi", "hi", "hi"]


def test_textgrid_short_form():
    grid = read_textgrid(FIXTURES / "b.TextGrid")
    assert frame_labels(grid["phones"], num_frames(1600)) == ["x", "x", "y", "y"]


def test_old_short_form_header(tmp_path):
    p = tmp_path / "old.TextGrid"
    text = (FIXTURES / "b.TextGrid").read_text()
    p.write_text(text.replace('"ooTextFile"', '"ooTextFile short"'))
    assert read_textgrid(p) == read_textgrid(FIXTURES / "b.TextGrid")


def test_ctm_with_gaps():
    aligned = read_alignments(FIXTURES / "phones.ctm")
    assert aligned.keys == ["utt1", "utt2"]
    intervals = aligned.columns["phones"][0]
    # k [0, 30) | gap [30, 50) | ae [50, 90) | gap [90, 92.5) | t [92.5, 122.5) ms
    assert frame_labels(intervals, 7) == ["k", None, "ae", "ae", "t", "t", None]
    assert frame_labels(aligned.columns["phones"][1], 3) == ["s", "s", "s"]


def test_textgrid_directory_and_tiers(tmp_path):
    (tmp_path / "spk1").mkdir()
    for name in ("a", "b"):
        (tmp_path / "spk1" / f"{name}.TextGrid").write_bytes(
            (FIXTURES / f"{name}.TextGrid").read_bytes()
        )
    aligned = read_alignments(tmp_path, ["phones"])
    assert aligned.keys == ["spk1/a", "spk1/b"]
    assert list(aligned.columns) == ["phones"]
    with pytest.raises(UsageError, match=r"b\.TextGrid has no interval tier 'words'"):
        read_alignments(tmp_path, ["words"])


def test_utf16_textgrid(tmp_path):
    p = tmp_path / "u.TextGrid"
    p.write_bytes((FIXTURES / "b.TextGrid").read_text().replace('"x"', '"ə"').encode("utf-16"))
    assert read_textgrid(p)["phones"][0][2] == "ə"


@pytest.mark.parametrize(
    "line, message",
    [
        ("utt1 1 0.0 k\n", "line 2: expected 'UTT CHANNEL START DURATION LABEL"),
        ("utt1 1 zero 0.1 k\n", "line 2: start and duration must be numbers"),
        ("utt1 1 0.0 -0.1 k\n", "line 2: start and duration must be finite"),
    ],
)
def test_bad_ctm_names_the_line(tmp_path, line, message):
    p = tmp_path / "x.ctm"
    p.write_text("utt0 1 0 0.1 a\n" + line)
    with pytest.raises(UsageError, match=message):
        read_alignments(p)


def test_not_a_textgrid(tmp_path):
    p = tmp_path / "x.TextGrid"
    p.write_text("hello")
    with pytest.raises(UsageError, match="not a Praat TextGrid"):
        read_textgrid(p)
