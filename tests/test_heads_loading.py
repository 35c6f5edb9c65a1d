"""Fine-tuned checkpoints through :func:`w2v.load`: the head is part of the model
(``model.head``, ``model.id2label``, ``task_head.*`` keys), an unknown head loads with a
notice or is refused when strict, and CTC logits decode as transformers' tokenizer does."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import w2v
from tests.helpers import hf_class, hf_config, perturb_
from w2v.errors import CheckpointError
from w2v.loading import convert
from w2v.nn.heads.ctc import blank_index, greedy_decode

ATOL_HF = {torch.float32: 1e-4}
LABELS = {0: "angry", 1: "happy", 2: "neutral"}
# a wav2vec2-base-960h style vocabulary: specials first, the word delimiter, letters
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAOINSHRDLUCMWFGYPBVK'XJQZ"]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no preprocessor_config.json
        return w2v.load(path, device="cpu", **kwargs)


def scale_(module: torch.nn.Module, seed: int = 2) -> None:
    """Matrices with a 1/sqrt(fan_in) scale (transformers draws heads with std 0.02, whose
    outputs hardly depend on their input: every frame would decode to the same symbol)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def audio(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """0.3 * N(0, 1) items right-padded with louder noise (never read)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), generator=g)
    for j, n in enumerate(lengths):
        x[j, :n] *= 0.3
    return x, torch.tensor(lengths)


# ---------------------------------------------------------------- sequence classification


@pytest.fixture(scope="module")
def sequence_classifier(transformers, tmp_path_factory):
    torch.manual_seed(0)
    config = hf_config("wav2vec2", id2label=LABELS, classifier_proj_size=8)
    hf = perturb_(hf_class("wav2vec2", "ForSequenceClassification")(config))
    scale_(hf.classifier)
    directory = tmp_path_factory.mktemp("seq")
    hf.save_pretrained(directory)
    return hf, directory


def test_sequence_classification_head_matches_transformers(sequence_classifier):
    hf, directory = sequence_classifier
    model = load(directory)
    assert model.head_kind == "sequence_classification"
    assert model.id2label == LABELS
    assert "task_head.projector.weight" in model.state_dict()
    assert not any(k.startswith("head.") for k in model.state_dict())
    lengths = [16000, 7000]
    x, lens = audio(lengths)
    with torch.inference_mode():
        batched = model.head(x, lens)["logits"]
        for j, n in enumerate(lengths):
            alone = model.head(x[j : j + 1, :n])
            assert set(alone) == {"logits"}
            ref = hf(x[j : j + 1, :n]).logits
            torch.testing.assert_close(alone["logits"], ref, atol=ATOL_HF[torch.float32], rtol=0)
            torch.testing.assert_close(batched[j : j + 1], ref, atol=ATOL_HF[torch.float32], rtol=0)


def test_converted_directory_keeps_the_head(sequence_classifier, tmp_path):
    hf, directory = sequence_classifier
    convert(directory, tmp_path / "w2v")
    model, again = load(directory), load(tmp_path / "w2v")
    assert again.id2label == LABELS
    x, _ = audio([9000])
    with torch.inference_mode():
        torch.testing.assert_close(again.head(x)["logits"], model.head(x)["logits"], atol=0, rtol=0)


def test_to_casts_the_head_with_the_model(sequence_classifier):
    _, directory = sequence_classifier
    model = load(directory)
    half = load(directory, dtype=torch.bfloat16)
    assert half.task_head.classifier.weight.dtype == torch.bfloat16
    x, _ = audio([9000])
    with torch.inference_mode():
        ref = model.head(x)["logits"]
        got = half.head(x.bfloat16())["logits"]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, atol=0.05 * ref.abs().max().item(), rtol=0)


# ---------------------------------------------------------------- unknown head


@pytest.fixture(scope="module")
def unknown_head(sequence_classifier, tmp_path_factory):
    """The sequence classifier under a class name w2v does not know: its head keys
    (``projector.*``, ``classifier.*``) are weights w2v cannot run."""
    hf, _ = sequence_classifier
    directory = tmp_path_factory.mktemp("mystery")
    hf.save_pretrained(directory)
    cfg = json.loads((directory / "config.json").read_text())
    cfg["architectures"] = ["Wav2Vec2ForMystery"]
    (directory / "config.json").write_text(json.dumps(cfg))
    return directory


def test_unknown_head_loads_with_a_notice_and_runs_no_head(unknown_head):
    with pytest.warns(UserWarning, match=r"classifier\.\*.*projector\.\*|projector.*classifier"):
        model = w2v.load(unknown_head, device="cpu")
    assert model.head_kind is None and model.id2label is None and model.task_head is None
    assert sorted(model.unused) == sorted(
        ["projector.weight", "projector.bias", "classifier.weight", "classifier.bias"]
    )
    with pytest.raises(ValueError, match="no head"):
        model.head(torch.zeros(1, 4000))


def test_strict_refuses_an_unknown_head(unknown_head):
    with pytest.raises(CheckpointError, match=r"unknown weight keys: .*(projector|classifier)"):
        load(unknown_head, strict=True)


# ---------------------------------------------------------------- CTC


@pytest.fixture(scope="module")
def ctc(transformers, tmp_path_factory):
    """A random-init CTC model with a real-looking vocabulary, its tokenizer from the
    vocab.json written beside it, and w2v's model loaded from the directory."""
    torch.manual_seed(0)
    hf = perturb_(hf_class("wav2vec2", "ForCTC")(hf_config("wav2vec2", vocab_size=len(VOCAB))))
    scale_(hf.lm_head)
    directory = tmp_path_factory.mktemp("ctc")
    hf.save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(VOCAB)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(directory / "vocab.json"))
    assert (tokenizer.pad_token, tokenizer.word_delimiter_token) == ("<pad>", "|")
    return hf, tokenizer, load(directory)


def reference_texts(tokenizer, logits: torch.Tensor, frames: list[int]) -> list[str]:
    ids = logits.argmax(-1)
    return tokenizer.batch_decode([ids[j, :n].tolist() for j, n in enumerate(frames)])


def test_ctc_head_logits_and_transcripts_match_transformers(ctc):
    hf, tokenizer, model = ctc
    assert model.head_kind == "ctc" and model.vocab == VOCAB and model.id2label is None
    lengths = [16000, 6000, 11111]
    x, lens = audio(lengths)
    with torch.inference_mode():
        logits = model.head(x, lens)["logits"]
        _, frames = model.hidden_states(x, lens, [0])
        for j, n in enumerate(lengths):
            ref = hf(x[j : j + 1, :n]).logits
            f = frames[j]
            torch.testing.assert_close(logits[j : j + 1, :f], ref, atol=1e-4, rtol=0)
    texts = greedy_decode(logits, frames, model.vocab)
    assert texts == reference_texts(tokenizer, logits, frames.tolist())
    assert len(set("".join(texts))) > 3, f"a trivial transcript tests little: {texts}"


def test_greedy_decode_matches_the_tokenizer_on_repeats_blanks_and_specials(ctc):
    """Symbol runs with repeats, blanks between equal symbols, delimiters at the ends and in
    runs, and special symbols: all that the tokenizer's grouping and stripping decides."""
    _, tokenizer, _ = ctc
    g = torch.Generator().manual_seed(3)
    frames = [60, 37, 1, 60]
    ids = torch.randint(0, 8, (4, 60), generator=g)  # mostly specials, | and E T A
    ids = ids.repeat_interleave(2, dim=1)[:, :60]  # runs of repeats
    ids[0, :4] = 4  # leading delimiters
    ids[1, 30:] = 0  # blanks past the valid frames must not matter
    logits = torch.nn.functional.one_hot(ids, len(VOCAB)).float() * 5
    logits += 0.1 * torch.randn(logits.shape, generator=g)
    texts = greedy_decode(logits, torch.tensor(frames), VOCAB)
    assert texts == reference_texts(tokenizer, logits, frames)
    assert any("<unk>" in t or "<s>" in t for t in texts) and any(" " in t for t in texts)


def test_blank_index_follows_the_vocabulary():
    assert blank_index(VOCAB) == 0
    # fairseq's dictionary order: CTC trains with <s> (index 0) as the blank
    assert blank_index(["<s>", "<pad>", "</s>", "<unk>", "|", "E"]) == 0
    assert blank_index(["<s>", "<pad>", "</s>", "<unk>", "<ctc_blank>", "E"]) == 4
    # the fine-tuning recipe's vocabulary: letters, then [UNK] and [PAD]
    assert blank_index(["a", "b", "|", "[UNK]", "[PAD]"]) == 4
    assert blank_index(["x", "y"]) == 0
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 1, 0, 1, 2, 2, 3]]), 4).float()
    assert greedy_decode(logits, None, ["<s>", "<pad>", "a", "|"]) == ["<pad><pad>a"]
    assert greedy_decode(logits, [4], ["a", "b", "-", "|"], blank=2) == ["bab"]
    with pytest.raises(ValueError, match="vocabulary of 3"):
        greedy_decode(logits, None, ["a", "b", "c"])
