"""The wheel: one top-level package ``w2v`` holding ``w2v.convert`` and the named configs,
and it works installed on its own, away from the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

# repository folder → where the wheel installs it (pyproject.toml's package-dir)
MAPPED = {"w2v": "w2v", "convert": "w2v/convert", "configs": "w2v/configs"}


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # build from a copy, so nothing (build/, *.egg-info) is written into the checkout
    src = tmp_path_factory.mktemp("src") / "w2v-src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".venv*", "fixtures"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src))
    (found,) = out.glob("w2v-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("target")
    _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "-q",
        "--target",
        str(target),
        str(wheel),
    )
    return target


def test_wheel_has_one_top_level_package_with_configs_and_every_subpackage(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"w2v"}
    configs = sorted(p.name for p in (REPO / "configs").glob("*.json"))
    assert configs, "no named configs in the repository"
    for name in configs:
        assert f"w2v/configs/{name}" in names, f"configs/{name} is not in the wheel"
    for folder, installed_as in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.relative_to(REPO / folder).as_posix()
            assert f"{installed_as}/{rel}" in names, f"package {folder}/{rel} is not in the wheel"


def test_installed_wheel_works_outside_the_repository(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    # a user's own convert.py next to their script must not shadow w2v's conversion code
    (work / "convert.py").write_text("raise ImportError('the user module was imported')\n")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import torch
        import w2v
        from w2v.convert.checkpoint import Checkpoint, save

        target = Path({str(installed)!r}).resolve()
        for mod in (w2v, w2v.convert, w2v.config):
            assert target in Path(mod.__file__).resolve().parents, mod.__file__
        names = w2v.config_names()
        print(" ".join(names))
        for name in names:
            # meta device: the architecture is built in full (xls-r-2b too), no memory is
            # allocated for its weights
            with torch.device("meta"):
                model = w2v.from_config(name)
            assert model.config == w2v.Config.from_name(name), name
        small = w2v.Config(conv_dim=(8,) * 7, hidden_size=16, num_layers=1, num_heads=2,
                           intermediate_size=32, pos_conv_kernel=4, pos_conv_groups=2)
        model = w2v.from_config(small)
        save(Checkpoint(small, model.state_dict()), "ckpt")
        loaded = w2v.load("ckpt")
        x = torch.randn(1, 4000)
        assert torch.equal(loaded(x)[0], model(x)[0])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONNOUSERSITE": "1"}
    result = _run(sys.executable, "-c", script, cwd=work, env=env)
    expected = sorted(p.stem for p in (REPO / "configs").glob("*.json"))
    assert result.stdout.split() == expected

    cli = _run(str(installed / "bin" / "w2v"), "--help", cwd=work, env=env)
    assert "embed" in cli.stdout and "convert" in cli.stdout
