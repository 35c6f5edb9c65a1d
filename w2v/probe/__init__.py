"""``w2v probe``: layer-wise probing of embeddings (labels, linear probes with a control
task, layer similarity by CKA, learned layer weights, plots).

Import-safe without the ``probe`` extra: the parts that need scikit-learn and matplotlib
(:mod:`~w2v.probe.linear`, :mod:`~w2v.probe.plots`, :mod:`~w2v.probe.run`) are imported
only when both are installed; otherwise :func:`probe` and :func:`extract` raise a
:class:`~w2v.errors.UsageError` saying how to install them. This is the one place that checks.
"""

from importlib.util import find_spec

from w2v.errors import UsageError
from w2v.probe.alignments import frame_labels, read_alignments, read_ctm, read_textgrid
from w2v.probe.cka import centred_gram, cka_grams, linear_cka
from w2v.probe.labels import read_table
from w2v.probe.reference import REFERENCES as PROBE_REFERENCES
from w2v.probe.reference import logmel_frames
from w2v.probe.settings import (
    DEFAULT_CKA_ITEMS,
    DEFAULT_MAX_FRAMES,
    PROBES,
    ProbeSettings,
)
from w2v.probe.settings import TASKS as PROBE_TASKS

EXTRA = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}
"""Modules of the ``probe`` extra → their package names."""
MISSING = tuple(package for module, package in EXTRA.items() if find_spec(module) is None)
INSTALL = 'pip install "w2v[probe]"'

if not MISSING:
    from w2v.probe.run import ProbeReport, extract, probe
else:  # the same names, each saying what to install

    def _missing(*args, **kwargs):
        raise UsageError(f"w2v probe needs {' and '.join(MISSING)}, not installed here: {INSTALL}")

    probe = extract = _missing
    ProbeReport = None

__all__ = [
    "DEFAULT_CKA_ITEMS",
    "DEFAULT_MAX_FRAMES",
    "INSTALL",
    "PROBES",
    "PROBE_REFERENCES",
    "PROBE_TASKS",
    "MISSING",
    "ProbeReport",
    "ProbeSettings",
    "centred_gram",
    "cka_grams",
    "extract",
    "frame_labels",
    "linear_cka",
    "logmel_frames",
    "probe",
    "read_alignments",
    "read_ctm",
    "read_table",
    "read_textgrid",
]
