"""Usage errors — a bad band list, an out-of-range number, a bad choice, a missing or unknown option — are one line
on stderr, like every other error, with exit status 2; `--help` and no arguments still print the help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mdseg.cli import options


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err and "╭" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["predict", "--opt-bands", "0,1,2,3"],
            "error: --opt-bands: band numbers start at 1; got '0,1,2,3' (see mdseg predict --help)",
        ),
        (
            ["predict", "--sar-bands", "1,,2"],
            "error: --sar-bands: expected 1-based band numbers separated by commas, e.g. 1,2,3; got '1,,2' "
            "(see mdseg predict --help)",
        ),
        (
            ["quicklook", "--opt", "o.tif", "--sar", "s.tif", "--pred", "p.tif", "--out", "v.png", "--rgb", "0,1,2"],
            "error: --rgb: band numbers start at 1; got '0,1,2' (see mdseg quicklook --help)",
        ),
        (["predict", "--tile", "5"], "error: --tile: "),
        (["predict", "--sar-scale", "foo"], "error: --sar-scale: 'foo' is not one of 'auto', 'db', 'linear'."),
        (["quicklook", "--opt", "o.tif"], "error: Missing option '--sar'. (see mdseg quicklook --help)"),
        (["predict", "--bogus"], "error: No such option: --bogus"),
        (["predict", "--tile"], "error: Option '--tile' requires an argument."),
        (["predict", "stray"], "error: Got unexpected extra argument"),
        (["no-such-command"], "error: No such command 'no-such-command'."),
    ],
    ids=["band-zero", "band-syntax", "rgb", "range", "choice", "missing", "unknown", "no-value", "extra", "command"],
)
def test_a_usage_error_is_one_line_and_exit_2(mdseg, args, expected):
    code, out, err = mdseg(*args)
    assert code == 2 and out == ""
    assert one_line(err).startswith(expected)


def test_an_out_of_range_number_names_the_option_and_the_bound(mdseg):
    _, _, err = mdseg("predict", "--tile", "5")
    line = one_line(err)
    assert "--tile" in line and "32" in line and line.endswith("(see mdseg predict --help)")


def test_help_is_still_printed_whole_on_stdout(mdseg):
    code, out, err = mdseg("predict", "--help")
    assert code == 0 and err == ""
    assert "--opt-bands" in out and len(out.splitlines()) > 10


def test_no_arguments_print_the_help(mdseg):
    code, out, _ = mdseg()
    assert code == 2  # as Click has it: the help instead of a command is a usage error
    assert "predict" in out and "quicklook" in out


def test_band_lists_parse_to_1_based_tuples():
    assert options.parse_bands("4,3,2", "--rgb") == (4, 3, 2)
    assert options.parse_bands(None, "--rgb") is None


def test_the_real_command_prints_one_line_and_exits_2():
    done = subprocess.run(
        [sys.executable, "-m", "mdseg", "predict", "--opt-bands", "0,1,2,3"],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert one_line(done.stderr).startswith("error: --opt-bands: band numbers start at 1; got '0,1,2,3'")
