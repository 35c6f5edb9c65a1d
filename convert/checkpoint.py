"""w2v's checkpoint directory and the in-memory form, :class:`Checkpoint`.

A directory holds

* ``config.json``: format, ``format_version``, checkpoint info, the backbone's
  ``config``, ``head`` (the task head's :class:`~w2v.nn.heads.HeadConfig`, or null) and
  ``extra`` (the names of the weights kept without running, a list);
* ``model.safetensors``: the backbone (and CTC head) in w2v's key names;
* ``head.safetensors``: the task head's weights in the head module's key names, when
  ``head`` is not null;
* ``extra.safetensors``: weights of the source that w2v does not run (an unknown head),
  under their source names and unchanged, when ``extra`` lists any;
* ``pretraining.safetensors``: the pretraining parts (mask embedding, quantizer and
  projections, HuBERT label embeddings) in the :class:`~w2v.nn.pretraining.Pretraining`
  module's key names, when ``config.json``'s ``pretraining`` (their
  :class:`~w2v.nn.pretraining.PretrainingConfig`) is not null. A directory without the
  entry has none.

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
from w2v.convert import fairseq, hf
from w2v.convert.files import read_json_object
from w2v.convert.keys import Table, check_state, some
from w2v.convert.outside import EXTRA_FILE, expected_head_state, head_problem, unused_notice

from w2v.atomic import atomic_write
from w2v.config import CheckpointInfo, Config
from w2v.errors import CheckpointError, escaped, one_line, quoted, shown
from w2v.nn.heads import HeadConfig
from w2v.nn.model import Model
from w2v.nn.pretraining import Pretraining, PretrainingConfig

FORMAT = "w2v"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
PRETRAINING_FILE = "pretraining.safetensors"
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
    * ``pretraining`` / ``pretraining_state``: the pretraining parts
      (:class:`~w2v.nn.pretraining.PretrainingConfig`) and their weights in the
      :class:`~w2v.nn.pretraining.Pretraining` module's key names; None / empty without.
    """

    config: Config
    state_dict: dict[str, torch.Tensor]
    info: CheckpointInfo = field(default_factory=CheckpointInfo)
    notices: tuple[str, ...] = ()
    head: HeadConfig | None = None
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    pretraining: PretrainingConfig | None = None
    pretraining_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # notices name their input (a path may hold ESC or newlines) and are printed as is
        object.__setattr__(self, "notices", tuple(escaped(n) for n in self.notices))
        if self.head is None and self.head_state:
            raise ValueError("head weights without a head config")
        if self.pretraining is None and self.pretraining_state:
            raise ValueError("pretraining weights without a pretraining config")
        if self.pretraining is None and self.extra:
            # readers keep weights outside the backbone as extra; the pretraining parts
            # among them are w2v's to run (w2v.train), so they move here, whoever read them
            _sort_pretraining(self)

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
            "pretraining": None if self.pretraining is None else self.pretraining.to_dict(),
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
    if ckpt.pretraining is not None:
        files[PRETRAINING_FILE] = _copies(ckpt.pretraining_state)
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
        for name in (HEAD_FILE, EXTRA_FILE, PRETRAINING_FILE):
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
    pretraining, pretraining_state = _pretraining(meta, d, config) if version >= 2 else (None, {})
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
        pretraining=pretraining,
        pretraining_state=pretraining_state,
    )


def _pretraining(
    meta: dict[str, Any], d: Path, config: Config
) -> tuple[PretrainingConfig | None, dict[str, torch.Tensor]]:
    """The ``pretraining`` entry of ``config.json`` and its weights, each checked."""
    entry = meta.get("pretraining")
    if entry is None:
        return None, {}
    try:
        pcfg = PretrainingConfig.from_dict(entry)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_FILE}: invalid pretraining ({shown(e, 300)})") from None
    state = _load(d / PRETRAINING_FILE)
    problem = head_problem(state, expected_pretraining_state(pcfg, config))
    if problem is not None:
        raise CheckpointError(f"{d / PRETRAINING_FILE}: the pretraining parts {problem}")
    return pcfg, state


def expected_pretraining_state(pcfg: PretrainingConfig, config: Config) -> dict[str, torch.Tensor]:
    """The state dict of the pretraining parts ``pcfg`` on ``config``, on the meta device."""
    with torch.device("meta"):
        return Pretraining(pcfg, config).state_dict()


# source key tables of pretraining parts, tried in order (see _sort_pretraining)
_PRETRAINING_TABLES = (
    Table(hf.PRETRAINING_KEYS),
    Table(fairseq.PRETRAINING_KEYS),
    Table(fairseq.HUBERT_PRETRAINING_KEYS),
)


def pretraining_config_from_state(
    state: dict[str, torch.Tensor], config: Config
) -> PretrainingConfig | None:
    """The :class:`PretrainingConfig` that pretraining weights in w2v's names imply (from
    their shapes alone), or None when they are no complete set.

    wav2vec 2.0: ``quantizer.codevectors`` (1, G*V, d) and ``project_q.weight`` (P, G*d)
    give G, V and both widths. HuBERT: ``label_embeddings`` (classes, P) is read as one
    label set (a checkpoint's split into several sets is not in its weights).
    """
    try:
        if "quantizer.codevectors" in state:
            book, proj = state["quantizer.codevectors"], state["project_q.weight"]
            groups = proj.shape[1] // book.shape[2]
            pcfg = PretrainingConfig(
                objective="wav2vec2",
                final_dim=int(proj.shape[0]),
                codevector_dim=int(proj.shape[1]),
                num_codevector_groups=int(groups),
                num_codevectors_per_group=int(book.shape[1] // groups),
            )
        elif "label_embeddings" in state:
            emb = state["label_embeddings"]
            pcfg = PretrainingConfig(
                objective="hubert", final_dim=int(emb.shape[1]), num_classes=(int(emb.shape[0]),)
            )
        elif "masked_spec_embed" in state:
            pcfg = PretrainingConfig(objective="mask")
        else:
            return None
    except (KeyError, IndexError, ValueError, ZeroDivisionError):
        return None
    if head_problem(state, expected_pretraining_state(pcfg, config)) is not None:
        return None
    return pcfg


def _sort_pretraining(ckpt: Checkpoint) -> None:
    """Move the pretraining parts found among ``ckpt.extra`` (a transformers
    ``*ForPreTraining`` or a fairseq wav2vec 2.0 / HuBERT pretraining checkpoint) to
    ``pretraining`` / ``pretraining_state``, rewording the notice about unused weights
    (gone when nothing else is unused); called while ``ckpt`` is built. A set that is
    incomplete or of a layout w2v does not build (a deeper quantizer, shared-group
    codebooks, GLU targets) stays in ``extra``.
    """
    for table in _PRETRAINING_TABLES:
        state = {table.target(k): v for k, v in ckpt.extra.items() if table.target(k)}
        pcfg = pretraining_config_from_state(state, ckpt.config)
        if pcfg is None or pcfg.objective == "mask":
            continue
        rest = {k: v for k, v in ckpt.extra.items() if table.target(k) is None}
        old = unused_notice("", ckpt.info.family, ckpt.extra)
        notices = []
        for n in ckpt.notices:
            if n.endswith(old):
                where = n[: -len(old)]
                if rest:
                    notices.append(unused_notice(where, ckpt.info.family, rest))
            else:
                notices.append(n)
        for name, value in (
            ("extra", rest), ("notices", tuple(notices)), ("pretraining", pcfg),
            ("pretraining_state", state),
        ):  # fmt: skip
            object.__setattr__(ckpt, name, value)
        return


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


def from_model(model: Model) -> Checkpoint:
    """The :class:`Checkpoint` of a model in memory (a trained one, to :func:`save`): its
    backbone (and CTC head), task head and pretraining parts, with its config and info."""
    backbone: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {"task_head": {}, "pretraining": {}}
    for key, value in model.state_dict().items():
        top, _, rest = key.partition(".")
        if top in parts:
            parts[top][rest] = value.detach()
        else:
            backbone[key] = value.detach()
    head = None if model.task_head is None else model.task_head.head_config
    pretraining = None if model.pretraining is None else model.pretraining.pretraining_config
    return Checkpoint(
        config=model.config,
        state_dict=backbone,
        info=model.info,
        head=head,
        head_state=parts["task_head"],
        pretraining=pretraining,
        pretraining_state=parts["pretraining"],
    )
