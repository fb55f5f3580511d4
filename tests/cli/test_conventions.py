"""Command-line conventions: --version, exit statuses by kind of error, shell completion, log messages through
stdlib logging (-v, --log-file), progress lines on a non-terminal."""

from __future__ import annotations

import logging

from mdseg import __version__
from mdseg.synth import synthesize_dataset


def test_version_prints_the_package_version(mdseg):
    code, out, err = mdseg("--version")
    assert (code, out, err) == (0, f"mdseg {__version__}\n", "")


def test_root_help_lists_the_exit_statuses_and_shell_completion(mdseg):
    code, out, _ = mdseg("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
    text = " ".join(out.split())
    assert "Exit statuses: 0 done" in text and "2 a usage error" in text and "3 an input, output" in text
    assert "4 a batch in which some scenes failed" in text and "128 + N stopped by signal N" in text


def test_an_input_error_exits_3(tmp_path, mdseg):
    code, _, err = mdseg("eval", "--pred", tmp_path / "absent.tif", "--label", tmp_path / "absent.tif")
    assert code == 3 and err.startswith("error:") and "absent.tif" in err


def test_an_existing_output_exits_3(tmp_path, mdseg):
    assert mdseg("synth", "--out", tmp_path, "--size", "64")[0] == 0
    code, _, err = mdseg("synth", "--out", tmp_path, "--size", "64")
    assert code == 3 and "already exists" in err


def test_usage_errors_and_contradicting_options_exit_2(tmp_path, mdseg):
    assert mdseg("synth", "--out", tmp_path, "--scenes", "0")[0] == 2  # rejected by Click
    assert mdseg("synth", "--out", tmp_path, "--nonsense")[0] == 2
    code, _, err = mdseg("synth", "--out", tmp_path, "--val", "1")  # an OptionError of the command itself
    assert code == 2 and "--val needs --scenes of 2 or more" in err


def test_synth_reports_each_scene_on_a_non_terminal(tmp_path, mdseg):
    code, _, err = mdseg("synth", "--out", tmp_path / "d", "--scenes", "3", "--size", "64")
    assert code == 0
    assert [line for line in err.splitlines() if line.startswith("scenes ")] == [
        "scenes 1/3",
        "scenes 2/3",
        "scenes 3/3",
    ]


def test_library_notes_show_with_verbose_and_go_to_the_log_file(tmp_path, mdseg):
    log = tmp_path / "mdseg.log"
    code, _, quiet = mdseg("synth", "--out", tmp_path / "a", "--scenes", "2", "--size", "64")
    assert code == 0 and "go to val" not in quiet
    code, _, err = mdseg("-v", "--log-file", log, "synth", "--out", tmp_path / "b", "--scenes", "2", "--size", "64")
    assert code == 0 and "1 of 2 scenes go to val" in err
    assert "INFO mdseg.synth.files: synthetic dataset: 1 of 2 scenes go to val" in log.read_text()
    assert not logging.getLogger("mdseg").handlers  # the command's handlers are gone once it returns


def test_library_messages_reach_the_standard_logging_api(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mdseg"):
        synthesize_dataset(tmp_path, scenes=2, size=64)
    assert [r.name for r in caplog.records] == ["mdseg.synth.files"]
    assert "1 of 2 scenes go to val" in caplog.records[0].getMessage()


def test_import_weights_logs_each_step_with_verbose(tmp_path, mdseg):
    source = tmp_path / "notes.pth"
    source.write_text("these are not weights")
    code, _, err = mdseg("-v", "import-weights", source, "--out", tmp_path / "out.safetensors")
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert code == 3 and lines[-1].startswith("error:") and f"'{source}' is not a PyTorch checkpoint" in lines[-1]
    assert f"import-weights: reading {source} (torch.load, weights only)" in " ".join(lines[:-1])
