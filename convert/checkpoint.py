"""w2v's checkpoint directory and the in-memory form, :class:`Checkpoint`.

A directory holds

* ``config.json``: format, ``format_version``, checkpoint info, the backbone's
  ``config``, ``head`` (the task head's :class:`~w2v.nn.heads.HeadConfig`, or null) and
  ``extra`` (the names of the weights kept without running, a list);
* ``model.safetensors``: the backbone (and CTC head) in w2v's key names;
* ``head.safetensors``: the task head's weights in the head module's key names, when
  ``head`` is not null;
* ``extra.safetensors``: weights of the source that w2v does not run (an unknown head),
  under their source names and unchanged, when ``extra`` lists any.

Reading checks everything ``config.json`` says (format, version, architecture,
family, vocabulary, head) and that each weights file holds exactly what it describes, so
a directory whose config and weights disagree fails here, with the file named, rather
than later when the model is built. Version 1 directories (no head, no extra) still read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from w2v.convert.files import read_json_object
from w2v.convert.keys import check_state, some
from w2v.convert.outside import EXTRA_FILE, expected_head_state, head_problem, unused_notice

from w2v.atomic import atomic_write
from w2v.config import CheckpointInfo, Config
from w2v.errors import CheckpointError, escaped, one_line, quoted, shown
from w2v.nn.heads import HeadConfig

FORMAT = "w2v"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
FAMILIES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")


@dataclass(frozen=True)
class Checkpoint:
    """A converted checkpoint: architecture, weights in w2v's key names, and what the
    checkpoint says about itself (:class:`~w2v.config.CheckpointInfo`).

    * ``notices``: one-line remarks produced while converting (dropped or unused weights).
    * ``head`` / ``head_state``: the task head w2v runs (:class:`~w2v.nn.heads.HeadConfig`,
      labels included) and its weights in the head module's key names; None / empty when
      the checkpoint has none (a CTC head lives in ``state_dict`` as ``lm_head.*``).
    * ``extra``: weights outside the backbone that w2v does not run, under the source's
      key names, unchanged; written to ``extra.safetensors`` so converting loses nothing.
    """

    config: Config
    state_dict: dict[str, torch.Tensor]
    info: CheckpointInfo = field(default_factory=CheckpointInfo)
    notices: tuple[str, ...] = ()
    head: HeadConfig | None = None
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # notices name their input (a path may hold ESC or newlines) and are printed as is
        object.__setattr__(self, "notices", tuple(escaped(n) for n in self.notices))
        if self.head is None and self.head_state:
            raise ValueError("head weights without a head config")

    def with_source(self, source: str) -> Checkpoint:
        return replace(self, info=replace(self.info, source=source))

    def metadata(self) -> dict[str, Any]:
        """The w2v ``config.json``: format, checkpoint info, architecture, head, extra."""
        info = self.info
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": info.family,
            "source": info.source,
            "normalize": info.normalize,
            "vocab": None if info.vocab is None else list(info.vocab),
            "config": self.config.to_dict(),
            "head": None if self.head is None else self.head.to_dict(),
            "extra": list(self.extra),
        }


def is_w2v_dir(path: str | os.PathLike) -> bool:
    """Whether ``path``'s config.json says it is a w2v checkpoint directory (of any version:
    one of an unknown version is still w2v's, and :func:`read` says what is wrong with it)."""
    return _w2v_meta(path) is not None


def format_version(path: str | os.PathLike) -> int | None:
    """The format version of the w2v checkpoint directory ``path`` (1 when its config.json
    does not say), or None when ``path`` is not one or its version is not an integer."""
    meta = _w2v_meta(path)
    version = None if meta is None else meta.get("format_version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _w2v_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return None
    try:
        meta = read_json_object(cfg, "config")
    except CheckpointError:
        return None
    return meta if meta.get("format") == FORMAT else None


def save(ckpt: Checkpoint, directory: str | os.PathLike) -> Path:
    """Write ``ckpt`` as a w2v checkpoint directory; each file is written atomically, and
    ``config.json`` last. Replacing a w2v checkpoint directory, its ``head.safetensors`` or
    ``extra.safetensors`` that ``ckpt`` lacks is removed (in any other directory they are
    left alone).

    Raises :class:`CheckpointError` naming the directory when it cannot be written
    (no space left, no permission); no partial file is left under a final name.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    out = Path(directory)
    files = {WEIGHTS_FILE: {k: v.detach().contiguous().cpu() for k, v in ckpt.state_dict.items()}}
    # copies: tensors of a pickled source may share storage, which safetensors refuses
    if ckpt.head is not None:
        files[HEAD_FILE] = _copies(ckpt.head_state)
    if ckpt.extra:
        files[EXTRA_FILE] = _copies(ckpt.extra)
    text = json.dumps(ckpt.metadata(), indent=2) + "\n"
    previous = is_w2v_dir(out)  # side files are removed only from w2v's own directories
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, tensors in files.items():
            atomic_write(
                out / name,
                lambda p, t=tensors: save_file(t, str(p), metadata={"format": "pt"}),
            )
        atomic_write(out / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
        for name in (HEAD_FILE, EXTRA_FILE):
            if previous and name not in files:
                (out / name).unlink(missing_ok=True)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{out}: cannot write the checkpoint ({one_line(e, 200)})") from None
    return out


def _copies(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()
    }


def read(directory: str | os.PathLike, *, strict: bool = False) -> Checkpoint:
    """Read a w2v checkpoint directory written by :func:`save`.

    ``strict``: refuse a directory that keeps weights w2v does not run (``extra``), as
    reading its source strictly would have.
    """
    d = Path(directory)
    cfg_path = d / CONFIG_FILE
    meta = read_json_object(cfg_path, "w2v config")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a w2v checkpoint config")
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {version} is newer than this w2v "
            f"understands ({FORMAT_VERSION}); upgrade w2v"
        )
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise CheckpointError(
            f"{cfg_path}: unknown format_version {quoted(version)} (this w2v writes "
            f"{FORMAT_VERSION})"
        )
    try:
        config = Config.from_dict(meta.get("config"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid config ({shown(e, 300)})") from None
    info = _info(meta, config, cfg_path, default_source=str(d))
    head, extra_keys = _head_and_extra(meta, cfg_path) if version >= 2 else (None, [])
    weights = d / WEIGHTS_FILE
    state = _load(weights)
    check_state(state, config, str(weights))
    head_state: dict[str, torch.Tensor] = {}
    if head is not None:
        head_state = _load(d / HEAD_FILE)
        problem = head_problem(head_state, expected_head_state(head, config))
        if problem is not None:
            raise CheckpointError(f"{d / HEAD_FILE}: the {head.kind} head {problem}")
    extra: dict[str, torch.Tensor] = {}
    notices: tuple[str, ...] = ()
    if extra_keys:
        file = d / EXTRA_FILE
        extra = _load(file)
        if sorted(extra) != sorted(extra_keys):
            raise CheckpointError(
                f"{file}: holds {some(sorted(extra))}, but {CONFIG_FILE} lists "
                f"{some(sorted(extra_keys))}"
            )
        if strict:
            raise CheckpointError(
                f"{file}: unknown weight keys: {some(extra_keys)} (kept from the source, "
                "outside the backbone; w2v does not run them)"
            )
        extra = {k: extra[k] for k in extra_keys}  # the source's order
        notices = (unused_notice(str(d), info.family, extra),)
    return Checkpoint(
        config=config,
        state_dict=state,
        info=info,
        notices=notices,
        head=head,
        head_state=head_state,
        extra=extra,
    )


def _load(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not file.is_file():
        raise CheckpointError(f"{file}: weights file is missing")
    try:
        return load_file(str(file))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all a damaged file
        raise CheckpointError(f"{file}: cannot read weights ({one_line(e, 200)})") from None


def _head_and_extra(meta: dict[str, Any], cfg_path: Path) -> tuple[HeadConfig | None, list[str]]:
    """The ``head`` and ``extra`` entries of a version 2 ``config.json``, each checked."""
    head = meta.get("head")
    if head is not None:
        try:
            head = HeadConfig.from_dict(head)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: invalid head ({shown(e, 300)})") from None
    extra = meta.get("extra", [])
    if not (isinstance(extra, list) and all(isinstance(k, str) for k in extra)):
        raise CheckpointError(f"{cfg_path}: extra must be a list of weight names")
    if len(set(extra)) != len(extra):
        raise CheckpointError(f"{cfg_path}: extra names a weight twice")
    return head, extra


def _info(
    meta: dict[str, Any], config: Config, cfg_path: Path, default_source: str
) -> CheckpointInfo:
    """The :class:`CheckpointInfo` ``config.json`` describes, each field checked."""
    family = meta.get("family", "wav2vec2")
    if family not in FAMILIES:
        raise CheckpointError(
            f"{cfg_path}: unknown family {quoted(family)}; expected one of {', '.join(FAMILIES)}"
        )
    normalize = meta.get("normalize", False)
    if not isinstance(normalize, bool):
        raise CheckpointError(f"{cfg_path}: normalize must be true or false")
    vocab = meta.get("vocab")
    if vocab is not None and not (
        isinstance(vocab, list)
        and all(isinstance(s, str) for s in vocab)
        and len(vocab) == config.vocab_size
    ):
        raise CheckpointError(
            f"{cfg_path}: vocab must be a list of {config.vocab_size} strings (the CTC head's "
            "outputs) or null"
        )
    source = meta.get("source", default_source)
    if not isinstance(source, str):
        raise CheckpointError(f"{cfg_path}: source must be a string")
    return CheckpointInfo(family=family, normalize=normalize, vocab=vocab, source=source)
