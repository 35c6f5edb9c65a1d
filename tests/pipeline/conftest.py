"""Fixtures of the pipeline tests."""

from __future__ import annotations

import pytest

from tests.pipeline.cli_runs import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A saved w2v checkpoint of the tiny seeded model (:func:`cli_runs.tiny_checkpoint`)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
