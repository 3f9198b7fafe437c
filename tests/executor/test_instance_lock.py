"""The agent's data-directory lock: one holder, a clear refusal naming it, released with the
process, and the holder's record telling its successor (same boot) who ran before."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nodeplane.executor.agent import instance_lock
from nodeplane.executor.agent.instance_lock import DataDirLocked, lock_data_dir

HOLD = """
import sys, time, uuid
from pathlib import Path
from nodeplane.executor.agent.instance_lock import lock_data_dir
lock = lock_data_dir(Path(sys.argv[1]), uuid.uuid4())
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.process  # the other holder is a real process
def test_a_second_holder_is_refused_with_the_directory_and_pid(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirLocked) as err:
            lock_data_dir(data_dir, uuid.uuid4())
        assert err.value.pid == holder.pid
        assert str(data_dir) in str(err.value) and f"pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the lock with the process (SIGKILL, no clean-up): free again.
    with lock_data_dir(data_dir, uuid.uuid4()):
        pass


def test_the_lock_is_per_open_file_even_in_one_process(tmp_path: Path) -> None:
    first = lock_data_dir(tmp_path, uuid.uuid4())
    with pytest.raises(DataDirLocked):
        lock_data_dir(tmp_path, uuid.uuid4())
    first.release()
    lock_data_dir(tmp_path, uuid.uuid4()).release()


def test_successors_on_the_same_boot_name_their_predecessors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    with lock_data_dir(tmp_path, ids[0]) as lock:
        assert lock.previous_instance_ids == ()
        record = json.loads((tmp_path / instance_lock.LOCK_FILE).read_text())
        assert record["instanceId"] == str(ids[0]) and isinstance(record["pid"], int)
    with lock_data_dir(tmp_path, ids[1]) as lock:
        assert lock.previous_instance_ids == (ids[0],)
    with lock_data_dir(tmp_path, ids[2]) as lock:
        assert lock.previous_instance_ids == (ids[1], ids[0])

    # A copy of this directory elsewhere on the host claims no one ...
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / instance_lock.LOCK_FILE).write_bytes((tmp_path / instance_lock.LOCK_FILE).read_bytes())
    with lock_data_dir(copy, uuid.uuid4()) as lock:
        assert lock.previous_instance_ids == ()
    # ... nor does this directory on another host (a cloned disk) or after a reboot.
    other_boot = tmp_path / "boot_id"
    other_boot.write_text(str(uuid.uuid4()))
    monkeypatch.setattr(instance_lock, "BOOT_ID", other_boot)
    with lock_data_dir(tmp_path, uuid.uuid4()) as lock:
        assert lock.previous_instance_ids == ()


def test_a_garbled_lock_file_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / instance_lock.LOCK_FILE).write_bytes(b"\x00\xff not json")
    with lock_data_dir(tmp_path, uuid.uuid4()) as lock:
        assert lock.previous_instance_ids == ()
