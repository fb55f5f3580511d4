"""An input is never an output, and no two outputs are one file: paths compared by identity, sidecars included."""

from __future__ import annotations

import os

import pytest

from mdseg.errors import OutputError
from mdseg.io.paths import InputFiles, check_apart, check_outputs


@pytest.fixture
def opt(tmp_path):
    path = tmp_path / "opt.tif"
    path.write_bytes(b"optical")
    return path


def test_an_output_at_an_inputs_path_is_refused_naming_both(opt):
    with pytest.raises(OutputError, match=f"the map '{opt}' and the optical input '{opt}' are the same file"):
        check_outputs({"the map": opt}, {"the optical input": opt})


@pytest.mark.parametrize("how", ["symlink", "hard link", "dot-dot"])
def test_an_output_reaching_an_input_another_way_is_refused(tmp_path, opt, how):
    other = tmp_path / "other.tif"
    if how == "symlink":
        other.symlink_to(opt)
    elif how == "hard link":
        os.link(opt, other)
    else:
        (tmp_path / "sub").mkdir()
        other = tmp_path / "sub" / ".." / "opt.tif"
    with pytest.raises(OutputError, match="an input is never overwritten"):
        check_outputs({"the map": other}, {"the optical input": opt})


def test_an_output_in_a_symlinked_folder_that_does_not_exist_yet_is_compared_by_where_it_lands(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match="give each output its own path"):
        check_outputs({"the map": tmp_path / "real" / "m.tif", "the picture": tmp_path / "link" / "m.tif"})


def test_an_output_on_an_inputs_gdal_sidecar_is_refused(opt):
    with pytest.raises(OutputError, match=f"the GDAL sidecar '{opt}.msk' of the optical input"):
        check_outputs({"the probabilities": opt.with_name("opt.tif.msk")}, {"the optical input": opt})


def test_an_output_on_another_outputs_sidecar_is_refused(tmp_path):
    with pytest.raises(OutputError, match="the picture .* and the GDAL sidecar .*m.tif.aux.xml' of the map"):
        check_outputs({"the map": tmp_path / "m.tif", "the picture": tmp_path / "m.tif.aux.xml"})


def test_distinct_outputs_and_inputs_pass_and_nothing_is_created(tmp_path, opt):
    check_outputs({"the map": tmp_path / "new" / "m.tif", "the run record": tmp_path / "new" / "m.json"}, {"o": opt})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.tif"]


def test_prebuilt_inputs_serve_many_checks(tmp_path, opt):
    inputs = InputFiles({"the optical input of scene 'a'": opt, "the SAR input of scene 'a'": None})
    check_outputs({"the map": tmp_path / "a_landcover.tif"}, inputs)
    with pytest.raises(OutputError, match="of scene 'a'"):
        check_outputs({"the map": opt}, inputs)


@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_a_folder_written_overlapping_an_input_folder_is_refused(tmp_path, where):
    data = tmp_path / "data"
    data.mkdir()
    out = {"same": data, "inside": data / "runs" / "r1", "holding": tmp_path}[where]
    with pytest.raises(OutputError, match="overlap"):
        check_apart(out, "the run folder", data, "the data folder")


def test_a_folder_beside_an_input_folder_or_a_symlink_to_it_is_told_apart(tmp_path):
    (tmp_path / "data").mkdir()
    check_apart(tmp_path / "data-runs", "the run folder", tmp_path / "data", "the data folder")
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(OutputError):
        check_apart(tmp_path / "alias" / "run", "the run folder", tmp_path / "data", "the data folder")
