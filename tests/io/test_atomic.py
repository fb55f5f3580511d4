"""All-or-nothing outputs: missing folders are made, and removed again when the block fails; temporaries name
their process, a target is one run's at a time, and what a killed run left is cleared by the next."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mdseg.errors import Interrupted, OutputError, OutputExistsError
from mdseg.io.atomic import AtomicOutputs, sweep_folder


def test_missing_output_folder_is_created_on_success(tmp_path):
    target = tmp_path / "out" / "maps" / "a.tif"
    with AtomicOutputs() as outputs:
        outputs.reserve(target).write_bytes(b"map")
    assert target.read_bytes() == b"map"


def test_folders_made_for_a_failed_block_are_removed(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt), AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "out" / "new" / "deeper" / "a.tif").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]  # the folder that existed stays, empty
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_target_refused_before_anything_is_made(tmp_path):
    target = tmp_path / "a.tif"
    target.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="--overwrite"), AtomicOutputs() as outputs:
        outputs.reserve(target)
    assert target.read_bytes() == b"mine" and list(tmp_path.iterdir()) == [target]


def test_check_refuses_like_reserve_but_creates_nothing(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        AtomicOutputs().check(tmp_path / "a.tif")
    AtomicOutputs().check(tmp_path / "new" / "b.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_outputs_get_plain_file_permissions_under_the_umask(tmp_path):
    target = tmp_path / "weights.safetensors"
    with AtomicOutputs() as outputs:
        tmp = outputs.reserve(target)
        tmp.write_bytes(b"x")
        tmp.chmod(0o600)  # what safetensors' writer leaves
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# --- temporaries a run can tell apart, one run per target, what killed runs leave ---------------------------------

HOLDER = """
import sys
from pathlib import Path
from mdseg.io.atomic import AtomicOutputs

with AtomicOutputs(overwrite=True) as outputs:
    tmp = outputs.reserve(Path(sys.argv[1]))
    tmp.write_bytes(b"holder")
    tmp.with_name(tmp.name + ".aux.xml").write_text("<PAMDataset/>")
    print(tmp, flush=True)
    sys.stdin.read()  # holds the target until the test closes stdin (or kills it)
"""


@pytest.fixture
def holder():
    """Start a real process that reserves a target and holds it; returns (process, its temporary)."""
    started = []

    def start(target):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        return proc, Path(proc.stdout.readline().strip())  # the line comes once the temporary is written

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=600)


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=600)
    return proc.pid


def test_temporaries_are_hidden_name_host_and_process_and_keep_the_extension(tmp_path):
    with AtomicOutputs() as outputs:
        tmp = outputs.reserve(tmp_path / "map.tif")
        scratch = outputs.scratch(tmp_path / "map.tif")
        tmp.write_bytes(b"map")
    host = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname())
    assert re.fullmatch(rf"\.map\.mdseg-{host}-{os.getpid()}-\d+-[0-9a-f]{{8}}\.partial\.tif", tmp.name)
    assert re.fullmatch(rf"\.map\.mdseg-{host}-{os.getpid()}-\d+-[0-9a-f]{{8}}\.scratch\.tif", scratch.name)


def test_a_killed_runs_temporaries_and_lock_are_cleared_by_the_next_run_in_that_folder(tmp_path, holder):
    proc, tmp = holder(tmp_path / "map.tif")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    assert hidden(tmp_path) == sorted([tmp.name, tmp.name + ".aux.xml", ".map.tif.mdseg-lock"])
    with AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "other.tif").write_bytes(b"mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tif"]


def test_a_target_a_live_run_holds_is_refused_naming_it_and_its_temporaries_stay(tmp_path, holder):
    proc, tmp = holder(tmp_path / "map.tif")
    busy = rf"'{re.escape(str(tmp_path / 'map.tif'))}' is being written .*pid {proc.pid} on host"
    with pytest.raises(OutputError, match=busy), AtomicOutputs(overwrite=True) as outputs:
        outputs.reserve(tmp_path / "map.tif")
    with AtomicOutputs() as outputs:  # another target in the same folder: the live run's files are left alone
        outputs.reserve(tmp_path / "other.tif").write_bytes(b"mine")
    assert tmp.exists() and tmp.with_name(tmp.name + ".aux.xml").exists()
    proc.stdin.close()
    assert proc.wait(timeout=600) == 0
    assert (tmp_path / "map.tif").read_bytes() == b"holder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "other.tif"]  # no lock file, no temporary


def test_a_target_held_by_an_open_block_of_this_process_is_refused(tmp_path):
    with AtomicOutputs() as first:
        first.reserve(tmp_path / "map.tif").write_bytes(b"first")
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"), AtomicOutputs() as second:
            second.reserve(tmp_path / "map.tif")
    assert (tmp_path / "map.tif").read_bytes() == b"first"
    assert hidden(tmp_path) == []


def test_a_run_that_ended_while_this_one_waited_for_the_lock_is_not_overwritten(tmp_path, holder):
    proc, _ = holder(tmp_path / "map.tif")
    proc.stdin.close()
    assert proc.wait(timeout=600) == 0
    with pytest.raises(OutputExistsError), AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "map.tif")
    assert (tmp_path / "map.tif").read_bytes() == b"holder" and hidden(tmp_path) == []


def test_lock_files_go_when_the_block_ends_by_success_or_by_an_error(tmp_path):
    with AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "a.tif").write_bytes(b"a")
        assert ".a.tif.mdseg-lock" in hidden(tmp_path)
    with pytest.raises(RuntimeError), AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "b.tif").write_bytes(b"b")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_interrupted_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "map.tif").write_bytes(b"old")
    with pytest.raises(Interrupted), AtomicOutputs(overwrite=True) as outputs:
        outputs.reserve(tmp_path / "map.tif").write_bytes(b"new")
        outputs.scratch(tmp_path / "map.tif").write_bytes(b"scratch")
        outputs.reserve(tmp_path / "new" / "x.json").write_text("{}")
        raise Interrupted(signal.SIGTERM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]
    assert (tmp_path / "map.tif").read_bytes() == b"old"


def test_temporaries_of_another_host_stay_and_of_a_dead_or_reused_pid_of_this_host_go(tmp_path, holder):
    proc, live = holder(tmp_path / "live.tif")
    host = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname())
    gone = dead_pid()
    names = {
        "other_host": f".a.mdseg-otherhost-{gone}-0-0123abcd.partial.tif",
        "dead": f".b.mdseg-{host}-{gone}-0-0123abcd.partial.tif",
        "dead_sidecar": f".b.mdseg-{host}-{gone}-0-0123abcd.partial.tif.aux.xml",
        "dead_journal": f".v.mdseg-{host}-{gone}-0-0123abcd.partial.gpkg-journal",
        "reused": f".c.mdseg-{host}-{proc.pid}-1-0123abcd.scratch.tif",  # a live pid that started at another time
        "user": ".b.partial-0123abcd.tif",  # not mdseg's naming: never touched
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in sweep_folder(tmp_path)) == sorted(
        names[k] for k in ("dead", "dead_sidecar", "dead_journal", "reused")
    )
    assert hidden(tmp_path) == sorted(
        [names["other_host"], names["user"], live.name, live.name + ".aux.xml", ".live.tif.mdseg-lock"]
    )


def test_an_unheld_lock_file_of_this_host_goes_and_one_of_another_host_stays(tmp_path):
    (tmp_path / ".a.tif.mdseg-lock").write_text(f"{socket.gethostname()} {dead_pid()}\n")
    (tmp_path / ".b.tif.mdseg-lock").write_text("some-other-host 1\n")
    sweep_folder(tmp_path)
    assert hidden(tmp_path) == [".b.tif.mdseg-lock"]


def test_the_same_target_through_a_symlinked_folder_is_given_twice(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match="given twice"), AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "real" / "a.tif")
        outputs.reserve(tmp_path / "link" / "a.tif")
    assert list((tmp_path / "real").iterdir()) == []
