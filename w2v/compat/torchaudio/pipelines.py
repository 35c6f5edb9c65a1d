"""torchaudio's wav2vec2-family ``pipelines`` bundles (``WAV2VEC2_ASR_BASE_960H`` ...) on w2v.

Each bundle has torchaudio's name, fields (``_path``, ``_params``, ``_sample_rate``,
``_normalize_waveform``, ``_model_type``, ASR: ``_labels``, ``_remove_aux_axis``) and
methods (``sample_rate``, ``get_model``, ``get_labels``; MMS_FA: ``get_dict`` too), read
from :data:`w2v.convert.torchaudio.BUNDLES`.

w2v downloads nothing: ``get_model`` reads the file torchaudio would download, the first of

1. ``path=`` (the file, or a directory holding it under its torchaudio name);
2. ``dl_kwargs={"model_dir": ..., "file_name": ...}`` as torchaudio reads them;
3. ``$W2V_CACHE/torchaudio/<file name>`` (``~/.cache/w2v/torchaudio/`` without W2V_CACHE);
4. torch hub's cache, where torchaudio put it (``~/.cache/torch/hub/checkpoints/``).

Without it, the error names the file, its URL and where to place it. The file is read with
w2v's allow-list unpickler (no code from it runs).

Input normalisation: the bundles torchaudio normalises (large models, XLS-R, HuBERT large,
WavLM large) get a model that normalises first, as torchaudio's does, over the whole
``(batch, samples)`` tensor at once, padding included (``normalization="batch"``).
``get_model(normalization="utterance")`` normalises each item over its own valid samples
instead, so a padded item gets the numbers it gets alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from w2v.compat.torchaudio.models.wav2vec2.model import Wav2Vec2Model, _build
from w2v.convert.safe_pickle import load_torch_file
from w2v.convert.torchaudio import BUNDLES, BundleInfo, is_torchaudio_state, remove_aux_rows
from w2v.errors import CheckpointError, UsageError, shown
from w2v.hub import cache_root
from w2v.nn.functional import frame_mask

DOWNLOAD_ROOT = "https://download.pytorch.org/torchaudio/models/"
"""Where torchaudio downloads bundle files whose ``_path`` is a bare file name."""

NORMALIZATIONS = ("batch", "utterance")
EPS = 1e-5  # F.layer_norm's default, which torchaudio's normalisation uses


def normalize_waveforms(
    waveforms: Tensor, lengths: Tensor | None = None, normalization: str = "batch"
) -> Tensor:
    """Zero mean, unit variance (eps 1e-5) input, (batch, samples) → (batch, samples).

    "batch": torchaudio's, over the whole tensor at once (every item and the padding).
    "utterance": each item over its first ``lengths[b]`` samples (all without lengths);
    the padding is set to zero.
    """
    if normalization == "batch":
        return F.layer_norm(waveforms, waveforms.shape)
    if lengths is None:
        return F.layer_norm(waveforms, waveforms.shape[-1:])
    valid = frame_mask(lengths, waveforms.shape[-1]).to(waveforms.dtype)  # (B, S)
    count = valid.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (waveforms * valid).sum(-1, keepdim=True) / count
    var = ((waveforms - mean).square() * valid).sum(-1, keepdim=True) / count
    return (waveforms - mean) * torch.rsqrt(var + EPS) * valid


class BundleModel(nn.Module):
    """What ``get_model`` returns for bundles with extra steps (torchaudio's wrapper, with
    the model as ``.model``): input normalisation, and for MMS_FA log-softmax outputs with
    a zero "star" column appended."""

    def __init__(
        self,
        model: Wav2Vec2Model,
        normalization: str | None,
        apply_log_softmax: bool = False,
        append_star: bool = False,
    ):
        super().__init__()
        self.model = model
        self.normalization = normalization
        self.apply_log_softmax = apply_log_softmax
        self.append_star = append_star

    def _input(self, waveforms: Tensor, lengths: Tensor | None) -> Tensor:
        if self.normalization is None:
            return waveforms
        return normalize_waveforms(waveforms, lengths, self.normalization)

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        output, output_lengths = self.model(self._input(waveforms, lengths), lengths)
        if self.apply_log_softmax:
            output = F.log_softmax(output, dim=-1)
        if self.append_star:
            star = output.new_zeros(output.shape[:-1] + (1,))
            output = torch.cat((output, star), dim=-1)
        return output, output_lengths

    def extract_features(
        self, waveforms: Tensor, lengths: Tensor | None = None, num_layers: int | None = None
    ) -> tuple[list[Tensor], Tensor | None]:
        return self.model.extract_features(self._input(waveforms, lengths), lengths, num_layers)


@dataclass
class Wav2Vec2Bundle:
    """torchaudio's ``Wav2Vec2Bundle``: a pretrained model's architecture and weights file."""

    _path: str
    _params: dict[str, Any]
    _sample_rate: float
    _normalize_waveform: bool
    _model_type: str

    @property
    def sample_rate(self) -> float:
        """Sample rate of the audio the model was trained on."""
        return self._sample_rate

    @property
    def file_name(self) -> str:
        """The file's name in torchaudio's download cache."""
        return self._path.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        return self._path if self._path.startswith("https") else DOWNLOAD_ROOT + self._path

    def weights_path(
        self, path: str | os.PathLike | None = None, dl_kwargs: dict | None = None
    ) -> Path:
        """Where the weights file is (see the module docstring); :class:`CheckpointError`
        naming the file, its URL and where to put it when it is nowhere."""
        name = (dl_kwargs or {}).get("file_name") or self.file_name
        if path is not None:
            p = Path(path)
            p = p / name if p.is_dir() else p
            if not p.is_file():
                raise CheckpointError(f"{shown(os.fspath(p))}: no such file ({self.url})")
            return p
        places = []
        if (dl_kwargs or {}).get("model_dir"):
            places.append(Path(dl_kwargs["model_dir"]) / name)
        cache = cache_root() / "torchaudio" / name
        places += [cache, Path(torch.hub.get_dir()) / "checkpoints" / name]
        for p in places:
            if p.is_file():
                return p
        raise CheckpointError(
            f"{name}: weights file not found; w2v does not download: fetch {self.url} and "
            f"place it at {cache} (or pass get_model(path=...))"
        )

    def _state_dict(self, path: str | os.PathLike | None, dl_kwargs: dict | None) -> dict:
        p = self.weights_path(path, dl_kwargs)
        state = load_torch_file(p)
        if not is_torchaudio_state(state):
            raise CheckpointError(
                f"{p}: not a torchaudio Wav2Vec2Model state dict (the file {self._path} "
                "torchaudio downloads is expected)"
            )
        return state

    def _model(self, state: dict, map_location: Any = None) -> Wav2Vec2Model:
        family = "wavlm" if self._model_type == "WavLM" else "wav2vec2"
        if self.file_name.startswith("hubert"):
            family = "hubert"
        model = _build(self._model_type, dict(self._params), family)
        model.load_state_dict(state, strict=True)
        if map_location is not None:
            model.to(map_location)
        return model

    def _finish(
        self,
        model: Wav2Vec2Model,
        normalization: str,
        log_softmax: bool = False,
        star: bool = False,
    ) -> nn.Module:
        if normalization not in NORMALIZATIONS:
            raise UsageError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}"
            )
        if self._normalize_waveform or log_softmax or star:
            norm = normalization if self._normalize_waveform else None
            model = BundleModel(model, norm, log_softmax, star)
        return model.eval()

    def get_model(
        self,
        *,
        dl_kwargs: dict | None = None,
        path: str | os.PathLike | None = None,
        normalization: str = "batch",
    ) -> nn.Module:
        """The model with the pretrained weights, in eval mode: a
        :class:`~w2v.compat.torchaudio.models.Wav2Vec2Model`, or for bundles that
        normalise their input a :class:`BundleModel` around it (as torchaudio's).

        ``dl_kwargs``: torchaudio's download options; ``model_dir`` and ``file_name`` say
        where the file is, ``map_location`` where the model goes, the rest is ignored.
        ``path``: the weights file or a directory holding it. ``normalization``: "batch"
        (torchaudio's) or "utterance" (see the module docstring).
        """
        state = self._state_dict(path, dl_kwargs)
        model = self._model(state, (dl_kwargs or {}).get("map_location"))
        return self._finish(model, normalization)


@dataclass
class Wav2Vec2ASRBundle(Wav2Vec2Bundle):
    """torchaudio's ``Wav2Vec2ASRBundle``: a CTC fine-tuned model and its labels."""

    _labels: tuple[str, ...] = ()
    _remove_aux_axis: tuple[int, ...] = (1, 2, 3)

    def get_labels(self, *, blank: str = "-") -> tuple[str, ...]:
        """The CTC output labels, the blank first."""
        return (blank, *self._labels)

    def _state_dict(self, path: str | os.PathLike | None, dl_kwargs: dict | None) -> dict:
        state = super()._state_dict(path, dl_kwargs)
        if self._remove_aux_axis:
            state = remove_aux_rows(state, tuple(self._remove_aux_axis), self.file_name)
        return state


@dataclass
class Wav2Vec2FABundle(Wav2Vec2ASRBundle):
    """torchaudio's ``Wav2Vec2FABundle`` (MMS_FA), as far as the model goes: ``get_model``
    (log-probabilities, a star column appended by default), ``get_labels``, ``get_dict``.
    The tokenizer and aligner (torchaudio's compiled forced_align) are not provided."""

    def get_labels(self, star: str | None = "*", blank: str = "-") -> tuple[str, ...]:
        labels = super().get_labels(blank=blank)
        return labels if star is None else (*labels, star)

    def get_model(
        self,
        with_star: bool = True,
        *,
        dl_kwargs: dict | None = None,
        path: str | os.PathLike | None = None,
        normalization: str = "batch",
    ) -> nn.Module:
        """The alignment model (eval mode): log-softmax outputs, plus a zero column for the
        star token when ``with_star``."""
        state = self._state_dict(path, dl_kwargs)
        model = self._model(state, (dl_kwargs or {}).get("map_location"))
        return self._finish(model, normalization, log_softmax=True, star=with_star)

    def get_dict(self, star: str | None = "*", blank: str = "-") -> dict[str, int]:
        """Token → index in the emission's last dimension."""
        return {k: i for i, k in enumerate(self.get_labels(star=star, blank=blank))}


_CLASSES = {"pretrained": Wav2Vec2Bundle, "asr": Wav2Vec2ASRBundle, "fa": Wav2Vec2FABundle}


def bundle_from_info(info: BundleInfo) -> Wav2Vec2Bundle:
    """The bundle object of one :class:`~w2v.convert.torchaudio.BundleInfo`."""
    params = {
        k: [tuple(x) for x in v] if k == "extractor_conv_layer_config" and v else v
        for k, v in info.params.items()
    }
    fields: dict[str, Any] = dict(
        _path=info.path,
        _params=params,
        _sample_rate=16000,
        _normalize_waveform=info.normalize,
        _model_type=info.model_type,
    )
    if info.labels is not None:
        fields.update(_labels=info.labels, _remove_aux_axis=info.remove_aux_axis)
    return _CLASSES[info.kind](**fields)


_BUNDLES = {name: bundle_from_info(info) for name, info in BUNDLES.items()}
WAV2VEC2_BASE = _BUNDLES["WAV2VEC2_BASE"]
WAV2VEC2_ASR_BASE_10M = _BUNDLES["WAV2VEC2_ASR_BASE_10M"]
WAV2VEC2_ASR_BASE_100H = _BUNDLES["WAV2VEC2_ASR_BASE_100H"]
WAV2VEC2_ASR_BASE_960H = _BUNDLES["WAV2VEC2_ASR_BASE_960H"]
WAV2VEC2_LARGE = _BUNDLES["WAV2VEC2_LARGE"]
WAV2VEC2_ASR_LARGE_10M = _BUNDLES["WAV2VEC2_ASR_LARGE_10M"]
WAV2VEC2_ASR_LARGE_100H = _BUNDLES["WAV2VEC2_ASR_LARGE_100H"]
WAV2VEC2_ASR_LARGE_960H = _BUNDLES["WAV2VEC2_ASR_LARGE_960H"]
WAV2VEC2_LARGE_LV60K = _BUNDLES["WAV2VEC2_LARGE_LV60K"]
WAV2VEC2_ASR_LARGE_LV60K_10M = _BUNDLES["WAV2VEC2_ASR_LARGE_LV60K_10M"]
WAV2VEC2_ASR_LARGE_LV60K_100H = _BUNDLES["WAV2VEC2_ASR_LARGE_LV60K_100H"]
WAV2VEC2_ASR_LARGE_LV60K_960H = _BUNDLES["WAV2VEC2_ASR_LARGE_LV60K_960H"]
WAV2VEC2_XLSR53 = _BUNDLES["WAV2VEC2_XLSR53"]
WAV2VEC2_XLSR_300M = _BUNDLES["WAV2VEC2_XLSR_300M"]
WAV2VEC2_XLSR_1B = _BUNDLES["WAV2VEC2_XLSR_1B"]
WAV2VEC2_XLSR_2B = _BUNDLES["WAV2VEC2_XLSR_2B"]
HUBERT_BASE = _BUNDLES["HUBERT_BASE"]
HUBERT_LARGE = _BUNDLES["HUBERT_LARGE"]
HUBERT_XLARGE = _BUNDLES["HUBERT_XLARGE"]
HUBERT_ASR_LARGE = _BUNDLES["HUBERT_ASR_LARGE"]
HUBERT_ASR_XLARGE = _BUNDLES["HUBERT_ASR_XLARGE"]
VOXPOPULI_ASR_BASE_10K_DE = _BUNDLES["VOXPOPULI_ASR_BASE_10K_DE"]
VOXPOPULI_ASR_BASE_10K_EN = _BUNDLES["VOXPOPULI_ASR_BASE_10K_EN"]
VOXPOPULI_ASR_BASE_10K_ES = _BUNDLES["VOXPOPULI_ASR_BASE_10K_ES"]
VOXPOPULI_ASR_BASE_10K_FR = _BUNDLES["VOXPOPULI_ASR_BASE_10K_FR"]
VOXPOPULI_ASR_BASE_10K_IT = _BUNDLES["VOXPOPULI_ASR_BASE_10K_IT"]
WAVLM_BASE = _BUNDLES["WAVLM_BASE"]
WAVLM_BASE_PLUS = _BUNDLES["WAVLM_BASE_PLUS"]
WAVLM_LARGE = _BUNDLES["WAVLM_LARGE"]
MMS_FA = _BUNDLES["MMS_FA"]

__all__ = [
    "BundleModel",
    "Wav2Vec2ASRBundle",
    "Wav2Vec2Bundle",
    "Wav2Vec2FABundle",
    "normalize_waveforms",
    *_BUNDLES,
]
