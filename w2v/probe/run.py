"""``w2v probe``: embeddings + labels → per-layer probe scores, layer similarity, learned
layer weights, written to an output directory (results.csv, summary.json, plots).

Utterance tasks read pooled outputs (``--pool mean`` or ``stats``), one vector per item
and layer. Frame tasks read frame outputs (``--pool none``) and time-aligned labels
(:mod:`w2v.probe.alignments`); frames are sampled, not all held: at most ``max_frames``
labelled frames (a seeded uniform sample) are read, one layer at a time, from the
memory-mapped outputs, so memory follows ``max_frames × dim`` whatever the corpus size.
Folds of a frame task are grouped by utterance (frames of one utterance are never on both
sides), or by speaker (or any group) when a groups file is given (``--groups``, a table
such as ``utt2spk``), so no group is on both sides either.

Control tasks: an utterance task's labels shuffled within groups (each group keeps its
label counts: what a probe gets from recognising the group alone is the control's
score); a frame task's labels replaced by Hewitt & Liang's random type labels, with the
type being the label within one utterance: every frame of one (utterance, label) pair
gets one label drawn from the label distribution, which held-out utterances cannot reveal.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed

from w2v.atomic import atomic_write_file
from w2v.errors import UsageError, quoted, shown
from w2v.pipeline import audio, embed_files
from w2v.pipeline.files import Progress, Summary
from w2v.pipeline.read import EmbeddingSet, FrameLayer, read_embeddings
from w2v.probe import cka as cka_mod
from w2v.probe.alignments import frame_labels, read_alignments
from w2v.probe.cca import DEFAULT_DIMS as SVCCA_DIMS
from w2v.probe.cca import svcca
from w2v.probe.labels import KINDS, column_kind, join, read_table
from w2v.probe.linear import METRICS, ProbeOptions, control_labels, make_folds, probe_layer
from w2v.probe.plots import plot_cka, plot_metrics, plot_reference, plot_weights
from w2v.probe.reference import logmel_frames
from w2v.probe.settings import TASKS, ProbeSettings
from w2v.probe.weights import learn_layer_weights

RESULTS = "results.csv"
SUMMARY = "summary.json"
RESULT_COLUMNS = (
    "label",
    "kind",
    "layer",
    "metric",
    "mean",
    "std",
    "control_mean",
    "control_std",
    "selectivity",
    "folds",
    "n",
)
"""Columns of results.csv: one row per label column × layer × metric. ``std`` is the sample
standard deviation over folds; ``selectivity`` is ``mean - control_mean``."""
EMBED_CACHE = {"utterance": ("embeddings/mean", "mean"), "frame": ("embeddings/frames", "none")}
"""``--model``: where in DIR the extracted embeddings are kept, and their pooling."""


@dataclass
class Target:
    """One label column ready to probe: sample s is frame ``frames[s]`` (frame tasks) of
    item ``items[s]``, with label ``y[s]`` (class code or number) and group ``groups[s]``."""

    name: str
    kind: str
    y: np.ndarray
    items: np.ndarray
    frames: np.ndarray | None
    groups: np.ndarray | None
    classes: list[str] | None = None
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeReport:
    """What :func:`probe` did: the rows of results.csv, summary.json's content, the files
    written, and one-line notices (unmatched labels, skipped entries, ...)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path]
    notices: list[str]

    def table(self) -> str:
        """A one-screen text table: per label column, its metrics by layer (mean ± std), the
        control task's first metric, and the learned weight; ``*`` marks the best layer."""
        lines = []
        weights = self.summary.get("layer_weights", {})
        for label, info in self.summary["labels"].items():
            metrics = METRICS[info["kind"]]
            best = self.summary["best"][label][metrics[0]]["layer"]
            lines.append(
                f"{label} ({info['kind']}, n={info['n']}, best layer {best} by {metrics[0]})"
            )
            head = f"  {'layer':>5}  " + "  ".join(f"{m:>15}" for m in metrics)
            head += f"  {'control ' + metrics[0]:>18}"
            if label in weights:
                head += f"  {'weight':>6}"
            lines.append(head)
            by = {(r["layer"], r["metric"]): r for r in self.rows if r["label"] == label}
            for k, layer in enumerate(self.summary["settings"]["layers"]):
                cells = [f"{by[layer, m]['mean']:.3f} ± {by[layer, m]['std']:.3f}" for m in metrics]
                line = f"  {layer:>4}{'*' if layer == best else ' '}  " + "  ".join(
                    f"{c:>15}" for c in cells
                )
                control = by[layer, metrics[0]]["control_mean"]
                line += f"  {control:>18.3f}" if control is not None else f"  {'':>18}"
                if label in weights:
                    line += f"  {weights[label][k]:>6.3f}"
                lines.append(line)
        return "\n".join(lines)


def extract(
    inputs: Sequence[str | os.PathLike],
    model: Any,
    out_dir: str | os.PathLike,
    task: str = "utterance",
    progress: Progress | None = None,
    **embed_options: Any,
) -> tuple[Path, Summary]:
    """``w2v probe --model``: embed ``inputs`` with every layer into ``out_dir/embeddings/…``
    through :func:`w2v.pipeline.embed_files`, whose resume makes a second call over the
    same audio compute nothing. Returns that directory and the embedding run's summary."""
    if task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {quoted(task)}")
    sub, pool = EMBED_CACHE[task]
    cache = Path(out_dir) / sub
    summary = embed_files(
        inputs, model, cache, layers="all", pool=pool, progress=progress, **embed_options
    )
    return cache, summary


def probe(
    emb_dir: str | os.PathLike,
    labels: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: ProbeSettings | None = None,
    compare: str | os.PathLike | None = None,
) -> ProbeReport:
    """Probe every layer of the ``w2v embed`` output ``emb_dir`` for every label column of
    ``labels``, writing results.csv, summary.json and plots into ``out_dir``.

    ``compare``: a second embedding directory of the same inputs (another model): its
    layers' CKA against this one's is added. Raises :class:`UsageError` for bad settings,
    unreadable inputs, no label that matches an embedded input, or too few items to fold.
    """
    settings = settings or ProbeSettings()
    settings.check()
    notices: list[str] = []
    emb = read_embeddings(emb_dir, settings.layers)
    _check_pool(emb, settings.task, emb_dir)
    if emb.skipped:
        notices.append(
            f"{emb.skipped} failed embedding entr{'y' if emb.skipped == 1 else 'ies'} skipped"
        )
    other = None if compare is None else _read_compare(emb, compare)
    targets, join_counts = _targets(emb, labels, settings, notices)
    options = ProbeOptions(
        folds=settings.folds,
        inner_folds=settings.inner_folds,
        inner_max=settings.inner_max,
        seed=settings.seed,
    )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot create output directory {shown(str(out))}: {shown(e)}") from None
    rows: list[dict[str, Any]] = []
    weights: dict[str, list[float]] = {}
    not_converged = 0
    for target in targets:
        splits = make_folds(target.y, target.kind, target.groups, settings.folds, settings.seed)
        control = _control(target, settings)
        layer_data = (
            _gather(emb.arrays[layer], target, np.arange(len(target.y))) for layer in emb.layers
        )
        scores = Parallel(n_jobs=settings.jobs)(
            delayed(probe_layer)(x, target.y, target.kind, splits, control, target.groups, options)
            for x in layer_data
        )
        for layer, s in zip(emb.layers, scores, strict=True):
            not_converged += s.not_converged
            rows.extend(_rows(target, layer, s, len(splits)))
        if settings.layer_weights and len(emb.layers) > 1:
            pick = cka_mod.sample_items(len(target.y), settings.weights_items, settings.seed)
            xs = [_gather(emb.arrays[layer], target, pick) for layer in emb.layers]
            w = learn_layer_weights(
                xs, target.y[pick], target.kind, seed=settings.seed, layer_norm=settings.layer_norm
            )
            weights[target.name] = [round(float(v), 6) for v in w]
    if not_converged:
        notices.append(
            f"{not_converged} logistic-regression fit(s) stopped at the iteration limit before converging"
        )
    grams = _layer_grams(emb, settings)
    cka = cka_mod.cka_grams(grams)
    reference = None if settings.reference is None else _reference_similarity(emb, settings, grams)
    del grams
    files = [_write_results(out / RESULTS, rows)]
    summary = _summary(emb, settings, targets, rows, join_counts, weights, cka, compare)
    files += _plots(out, emb.layers, targets, rows, weights, cka)
    if other is not None:
        cross = _cka_compare(emb, other, settings)
        summary["compare"] = {
            "embeddings": str(Path(compare).resolve()),
            "layers": other.layers,
            "cka": _matrix(cross),
        }
        files.append(
            plot_cka(
                out / "cka_compare.png",
                cross,
                emb.layers,
                other.layers,
                "CKA: this model vs compare",
                "layer (this model)",
                "layer (compare)",
            )
        )
    if reference is not None:
        summary["reference"] = {
            "name": settings.reference,
            "layers": list(emb.layers),
            "cka": [round(float(v), 6) for v in reference[0]],
            "svcca": [round(float(v), 6) for v in reference[1]],
            "svcca_dims": SVCCA_DIMS,
        }
        files.append(
            plot_reference(out / "cka_reference.png", emb.layers, *reference, settings.reference)
        )
    summary["notices"] = notices
    files.insert(1, _write_json(out / SUMMARY, summary))
    return ProbeReport(rows, summary, files, notices)


def _check_pool(emb: EmbeddingSet, task: str, emb_dir: Any) -> None:
    if task == "frame" and emb.pool != "none":
        raise UsageError(
            f"--task frame needs frame outputs (w2v embed --pool none); {shown(str(emb_dir))} "
            f"holds pool {shown(emb.pool)}"
        )
    if task == "utterance" and emb.pool == "none":
        raise UsageError(
            f"--task utterance needs pooled outputs (w2v embed --pool mean or stats); "
            f"{shown(str(emb_dir))} holds frames"
        )


# Labels → targets -------------------------------------------------------------------


def _targets(
    emb: EmbeddingSet, labels: Any, settings: ProbeSettings, notices: list[str]
) -> tuple[list[Target], dict[str, Any]]:
    if settings.task == "utterance":
        targets, counts = _utterance_targets(emb, labels, settings)
    else:
        targets, counts = _frame_targets(emb, labels, settings)
    if counts["unmatched_labels"]:
        examples = ", ".join(quoted(k, 60) for k in counts["unmatched_examples"])
        notices.append(
            f"{counts['unmatched_labels']} label key(s) match no embedded input (e.g. {examples})"
        )
    if counts["unlabelled_inputs"]:
        notices.append(f"{counts['unlabelled_inputs']} embedded input(s) have no labels")
    for t in targets:
        missing = t.counts.get("missing", 0)
        if missing:
            what = "frame(s) without a label" if settings.task == "frame" else "missing value(s)"
            notices.append(f"{t.name}: {missing} {what} left out")
    return targets, counts


def _utterance_targets(
    emb: EmbeddingSet, labels: Any, settings: ProbeSettings
) -> tuple[list[Target], dict[str, Any]]:
    table = read_table(labels, settings.key_column)
    joined = join(table.keys, emb.paths, table.source)
    from_table = settings.group_by if settings.groups is None else None
    names = (
        list(settings.labels) if settings.labels else [c for c in table.columns if c != from_table]
    )
    for name in [
        *names,
        *([from_table] if from_table else []),
        *settings.classify,
        *settings.regress,
    ]:
        if name not in table.columns:
            raise UsageError(
                f"{shown(table.source)} has no column {quoted(name)} (columns: "
                f"{shown(', '.join(table.columns))})"
            )
    if not names:
        raise UsageError(f"{shown(table.source)} has no label column besides the key and group")
    rows = np.array([r for r, i in enumerate(joined.items) if i >= 0])
    if from_table:
        group_values = table.columns[from_table]
    elif settings.groups is not None:
        by_item = _item_groups(emb, settings)
        group_values = [by_item[i] if i >= 0 else None for i in joined.items]
    else:
        group_values = None
    targets = []
    for name in names:
        values = table.columns[name]
        keep = [
            r
            for r in rows
            if values[r] is not None and (group_values is None or group_values[r] is not None)
        ]
        missing = len(rows) - len(keep)
        kind = _kind(name, [values[r] for r in keep], settings)
        if not keep:
            raise UsageError(f"label column {quoted(name)} has no value for any embedded input")
        items = np.array([joined.items[r] for r in keep], dtype=np.int64)
        groups = _codes([group_values[r] for r in keep])[0] if group_values else None
        targets.append(_target(name, kind, [values[r] for r in keep], items, None, groups, missing))
    return targets, _join_counts(joined, len(table.keys))


def _frame_targets(
    emb: EmbeddingSet, labels: Any, settings: ProbeSettings
) -> tuple[list[Target], dict[str, Any]]:
    if settings.group_by and settings.groups is None:
        raise UsageError(
            "a frame task's labels have no columns to group by: give --groups FILE (a table "
            "such as utt2spk) with --group-by naming its column, or leave --group-by out "
            "(folds are then grouped by utterance)"
        )
    by_item = None if settings.groups is None else _item_groups(emb, settings)
    aligned = read_alignments(labels, list(settings.labels) if settings.labels else None)
    joined = join(aligned.keys, emb.paths, aligned.source)
    targets = []
    for name, per_key in aligned.columns.items():
        items, frames, values = [], [], []
        unlabelled = 0
        for r, item in enumerate(joined.items):
            if item < 0:
                continue
            per_frame = frame_labels(per_key[r], emb.frames[item])
            ungrouped = by_item is not None and by_item[item] is None
            for t, v in enumerate(per_frame):
                if v is None or ungrouped:
                    unlabelled += 1
                    continue
                items.append(item)
                frames.append(t)
                values.append(v)
        if not values:
            raise UsageError(f"tier {quoted(name)} labels no frame of any embedded input")
        total = len(values)
        pick = cka_mod.sample_items(total, settings.max_frames, settings.seed)
        kind = _kind(name, [values[s] for s in pick], settings)
        items_a = np.asarray(items, dtype=np.int64)[pick]
        groups = items_a.copy() if by_item is None else _codes([by_item[i] for i in items_a])[0]
        target = _target(
            name,
            kind,
            [values[s] for s in pick],
            items_a,
            np.asarray(frames, dtype=np.int64)[pick],
            groups,
            unlabelled,
        )
        target.counts["labelled_frames"] = total
        target.counts["sampled_frames"] = len(pick)
        targets.append(target)
    return targets, _join_counts(joined, len(aligned.keys))


def _item_groups(emb: EmbeddingSet, settings: ProbeSettings) -> list[str | None]:
    """``--groups FILE``: each embedded input's group (None: the file does not name it)."""
    table = read_table(settings.groups)
    if settings.group_by is not None:
        column = settings.group_by
    elif len(table.columns) == 1:
        column = next(iter(table.columns))
    else:
        raise UsageError(
            f"{shown(table.source)} has columns {shown(', '.join(table.columns))}: name the "
            "groups' one with --group-by"
        )
    if column not in table.columns:
        raise UsageError(
            f"{shown(table.source)} has no column {quoted(column)} (columns: "
            f"{shown(', '.join(table.columns))})"
        )
    joined = join(table.keys, emb.paths, table.source)
    out: list[str | None] = [None] * len(emb.paths)
    for r, item in enumerate(joined.items):
        if item >= 0:
            out[item] = table.columns[column][r]
    return out


def _kind(name: str, values: list[str], settings: ProbeSettings) -> str:
    if name in settings.classify:
        return "class"
    if name in settings.regress:
        if column_kind(values) != "number":
            raise UsageError(
                f"--regress {quoted(name)}: the column holds values that are not numbers"
            )
        return "number"
    return column_kind(values)


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(values))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def _target(
    name: str,
    kind: str,
    values: list[str],
    items: np.ndarray,
    frames: np.ndarray | None,
    groups: np.ndarray | None,
    missing: int,
) -> Target:
    assert kind in KINDS
    counts: dict[str, Any] = {"n": len(values), "missing": missing}
    if kind == "class":
        y, classes = _codes(values)
        counts["classes"] = dict(sorted(Counter(values).items()))
        if len(classes) < 2:
            raise UsageError(f"label column {quoted(name)} has a single class {quoted(classes[0])}")
    else:
        y, classes = np.array([float(v) for v in values]), None
        counts.update(mean=float(np.mean(y)), std=float(np.std(y)))
    if groups is not None:
        counts["groups"] = int(len(np.unique(groups)))
    return Target(name, kind, y, items, frames, groups, classes, counts)


def _join_counts(joined: Any, keys: int) -> dict[str, Any]:
    return {
        "label_keys": keys,
        "matched": keys - len(joined.unmatched),
        "unmatched_labels": len(joined.unmatched),
        "unmatched_examples": joined.unmatched[:3],
        "unlabelled_inputs": len(joined.unlabelled),
    }


def _control(target: Target, settings: ProbeSettings) -> np.ndarray:
    if target.frames is None or target.kind != "class":
        return control_labels(target.y, target.groups, settings.seed + 1)
    # random type labels: one draw from the label distribution per (utterance, label)
    rng = np.random.default_rng(settings.seed + 1)
    types = target.items * (int(target.y.max()) + 1) + target.y
    unique, inverse = np.unique(types, return_inverse=True)
    draws = target.y[rng.integers(0, len(target.y), size=len(unique))]
    return draws[inverse]


# Reading layers -----------------------------------------------------------------------


def _gather(layer: Any, target: Target, picks: np.ndarray) -> np.ndarray:
    """(len(picks), dim) float32: the layer's vectors of samples ``picks`` of ``target``."""
    items = target.items[picks]
    if target.frames is None:
        return np.ascontiguousarray(layer[items], dtype=np.float32)
    frames = target.frames[picks]
    return _gather_frames(layer, items, frames)


def _gather_frames(layer: FrameLayer, items: np.ndarray, frames: np.ndarray) -> np.ndarray:
    order = np.lexsort((frames, items))
    out = None
    bounds = np.flatnonzero(np.diff(items[order])) + 1
    for chunk in np.split(order, bounds):
        if not len(chunk):
            continue
        array = layer[int(items[chunk[0]])]  # a memory map: only the rows taken are read
        rows = np.asarray(array[frames[chunk]], dtype=np.float32)
        if out is None:
            out = np.empty((len(items), rows.shape[1]), dtype=np.float32)
        out[chunk] = rows
    return out


def _rows(target: Target, layer: int, s: Any, folds: int) -> Iterator[dict[str, Any]]:
    for metric in METRICS[target.kind]:
        scores = np.asarray(s.scores[metric])
        control = np.asarray(s.control[metric]) if s.control[metric] else None
        mean = float(scores.mean())
        cmean = None if control is None else float(control.mean())
        yield {
            "label": target.name,
            "kind": target.kind,
            "layer": layer,
            "metric": metric,
            "mean": mean,
            "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "control_mean": cmean,
            "control_std": None if control is None else float(control.std(ddof=1)),
            "selectivity": None if cmean is None else mean - cmean,
            "folds": folds,
            "n": len(target.y),
        }


# Layer similarity ---------------------------------------------------------------------


def _cka_sample(emb: EmbeddingSet, settings: ProbeSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """(items, frames or None) of the CKA sample: items, or frames over all items."""
    if emb.pool != "none":
        return cka_mod.sample_items(len(emb.paths), settings.cka_items, settings.seed), None
    lengths = np.asarray(emb.frames, dtype=np.int64)
    flat = cka_mod.sample_items(int(lengths.sum()), settings.cka_items, settings.seed)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    items = np.searchsorted(starts, flat, side="right") - 1
    return items, flat - starts[items]


def _layer_sample(
    emb: EmbeddingSet, layer: int, items: np.ndarray, frames: np.ndarray | None
) -> np.ndarray:
    if frames is None:
        return np.asarray(emb.arrays[layer][items], dtype=np.float32)
    return _gather_frames(emb.arrays[layer], items, frames)


def _layer_grams(emb: EmbeddingSet, settings: ProbeSettings) -> list[np.ndarray]:
    items, frames = _cka_sample(emb, settings)
    return [cka_mod.centred_gram(_layer_sample(emb, layer, items, frames)) for layer in emb.layers]


def _reference_similarity(
    emb: EmbeddingSet, settings: ProbeSettings, grams: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(layers,) CKA and (layers,) SVCCA of each layer against the reference, on the CKA
    sample."""
    items, frames = _cka_sample(emb, settings)
    rows = []
    cache: dict[int, np.ndarray] = {}
    for k, item in enumerate(items.tolist()):
        if item not in cache:
            path = emb.paths[item]
            try:
                wave, _ = audio.load(path, channel=emb.settings.get("channel"))
            except (OSError, ValueError) as e:  # AudioError included
                raise UsageError(f"--reference: cannot read {shown(path)}: {shown(e)}") from None
            mel = logmel_frames(wave)
            if len(mel) != emb.frames[item]:
                raise UsageError(
                    f"--reference: {shown(path)} gives {len(mel)} frames, its embeddings "
                    f"{emb.frames[item]}; was the file changed?"
                )
            cache = {item: mel}  # items come sorted: one file held at a time
        mel = cache[item]
        rows.append(mel.mean(axis=0) if frames is None else mel[frames[k]])
    ref = np.stack(rows)
    cka = cka_mod.cka_grams(grams, [cka_mod.centred_gram(ref)])[:, 0]
    cca = np.array([svcca(_layer_sample(emb, layer, items, frames), ref) for layer in emb.layers])
    return cka, cca


def _read_compare(emb: EmbeddingSet, compare: Any) -> EmbeddingSet:
    other = read_embeddings(compare)
    if other.pool != emb.pool:
        raise UsageError(
            f"--compare {shown(str(compare))} holds pool {shown(other.pool)}, the probed "
            f"embeddings {shown(emb.pool)}"
        )
    where = {p: i for i, p in enumerate(other.paths)}
    shared = [i for i, p in enumerate(emb.paths) if p in where]
    if not shared:
        raise UsageError(f"--compare {shown(str(compare))} holds none of the probed inputs")
    for i in shared:
        if emb.frames[i] != other.frames[where[emb.paths[i]]]:
            raise UsageError(
                f"{shown(emb.paths[i])} has {emb.frames[i]} frames here and "
                f"{other.frames[where[emb.paths[i]]]} in --compare"
            )
    return other


def _cka_compare(emb: EmbeddingSet, other: EmbeddingSet, settings: ProbeSettings) -> np.ndarray:
    """(layers here, layers there) CKA on a seeded sample of the inputs both hold (frame
    outputs: one random frame of each sampled input)."""
    where = {p: i for i, p in enumerate(other.paths)}
    shared = np.asarray([i for i, p in enumerate(emb.paths) if p in where])
    pick = shared[cka_mod.sample_items(len(shared), settings.cka_items, settings.seed)]
    theirs = np.asarray([where[emb.paths[i]] for i in pick])
    frames = None
    if emb.pool == "none":
        rng = np.random.default_rng(settings.seed)
        frames = np.array([rng.integers(0, emb.frames[i]) for i in pick])
    a = [cka_mod.centred_gram(_layer_sample(emb, layer, pick, frames)) for layer in emb.layers]
    b = [
        cka_mod.centred_gram(_layer_sample(other, layer, theirs, frames)) for layer in other.layers
    ]
    return cka_mod.cka_grams(a, b)


# Outputs ------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_results(path: Path, rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row[c]) for c in RESULT_COLUMNS])
    data = buffer.getvalue().encode("utf-8")
    return atomic_write_file(path, lambda f: f.write(data))


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"  # Path: str
    return atomic_write_file(path, lambda f: f.write(text.encode("utf-8")))


def _matrix(m: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in m]


def _versions() -> dict[str, str]:
    import matplotlib  # the probe extra, imported when used (linear.py, plots.py)
    import sklearn

    try:
        w2v_version = metadata.version("w2v")
    except metadata.PackageNotFoundError:
        w2v_version = "unknown"
    return {
        "w2v": w2v_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "matplotlib": matplotlib.__version__,
    }


def _summary(
    emb: EmbeddingSet,
    settings: ProbeSettings,
    targets: list[Target],
    rows: list[dict[str, Any]],
    join_counts: dict[str, Any],
    weights: dict[str, list[float]],
    cka: np.ndarray,
    compare: Any,
) -> dict[str, Any]:
    best: dict[str, dict[str, Any]] = {}
    for t in targets:
        best[t.name] = {}
        for metric in METRICS[t.kind]:
            mine = [r for r in rows if r["label"] == t.name and r["metric"] == metric]
            top = max(mine, key=lambda r: (r["mean"], -emb.layers.index(r["layer"])))
            best[t.name][metric] = {
                "layer": top["layer"],
                "mean": round(top["mean"], 6),
                "std": round(top["std"], 6),
            }
    recorded = asdict(settings)
    recorded["layers"] = list(emb.layers)
    return {
        "settings": recorded,
        "seeds": {"folds": settings.seed, "control": settings.seed + 1, "samples": settings.seed},
        "embeddings": emb.settings,
        "counts": {
            "embedded": len(emb.paths) + emb.skipped,
            "failed_entries": emb.skipped,
            **join_counts,
        },
        "labels": {t.name: {"kind": t.kind, **t.counts} for t in targets},
        "best": best,
        "layer_weights": weights,
        "cka": {"layers": list(emb.layers), "matrix": _matrix(cka)},
        "metrics": {kind: list(m) for kind, m in METRICS.items()},
        "versions": _versions(),
    }


def _plots(
    out: Path,
    layers: list[int],
    targets: list[Target],
    rows: list[dict[str, Any]],
    weights: dict[str, list[float]],
    cka: np.ndarray,
) -> list[Path]:
    files = []
    for t in targets:
        panels = {}
        for metric in METRICS[t.kind]:
            mine = {r["layer"]: r for r in rows if r["label"] == t.name and r["metric"] == metric}
            mean = np.array([mine[k]["mean"] for k in layers])
            std = np.array([mine[k]["std"] for k in layers])
            control = [mine[k]["control_mean"] for k in layers]
            panels[metric] = (mean, std, None if None in control else np.array(control))
        files.append(plot_metrics(out / f"probe_{_safe(t.name)}.png", t.name, layers, panels))
    files.append(plot_cka(out / "cka.png", cka, layers, layers, "layer similarity (linear CKA)"))
    if weights:
        files.append(
            plot_weights(
                out / "layer_weights.png", layers, {k: np.array(v) for k, v in weights.items()}
            )
        )
    return files


def _safe(name: str) -> str:
    """A label column's name as a file-name part."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "label"
