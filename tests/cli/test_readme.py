"""The README's two set-up commands: CI runs exactly them, and the main job works on the shipped sample."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from mdseg.checkpoint import DEMO_CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]


def setup_commands() -> list[str]:
    """The bash blocks of the README's "Set up (two commands)" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up (two commands)", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_ci_runs_exactly_the_readme_commands():
    commands = setup_commands()
    assert len(commands) == 2
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    for command in commands:
        assert command in ci, f"`{command}` from README.md is not a line of .ci/run"


@pytest.mark.slow
@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")
def test_readme_main_command_maps_the_sample_to_a_valid_cog_and_a_picture(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    install_and_run = setup_commands()[0]
    main_job = install_and_run.split("&&", 1)[1].strip()  # the install half is what got us here
    argv = shlex.split(main_job)
    assert argv[:2] == ["mdseg", "predict"]
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")  # the command's relative paths, in a fresh folder
    done = subprocess.run(
        [sys.executable, "-m", "mdseg", *argv[1:]], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "demo weights" in done.stderr
    out = tmp_path / argv[argv.index("--out") + 1]
    picture = tmp_path / argv[argv.index("--quicklook") + 1]
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with rasterio.open(out) as src:
        classes = src.read(1)
    assert set(np.unique(classes)) - {255} and len(np.unique(classes)) >= 5  # a map, not one class
