"""A node's disk full, read-only, or a mount point: that node's apply or teardown error, nothing more.

Real litecoind regtest nodes on the process driver; the node's directory is a real tmpfs or a
read-only bind mount (root ignores file modes, so chmod could not make it read-only).
"""

import asyncio
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.executor.runtime.backend import ApplyError
from tests.agent.litecoin_host import (
    LitecoinHost,
    litecoin_host,
    next_revision,
    read_only,
    tmpfs,
)

pytestmark = [pytest.mark.anyio, pytest.mark.process, pytest.mark.chain]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LitecoinHost]:
    with litecoin_host(tmp_path / "agent") as h:
        yield h


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem has no byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*.tmp")]


async def test_a_full_disk_fails_only_the_write_it_needs(host: LitecoinHost) -> None:
    with tmpfs(host.node_dir("ltc-full"), "200m"):
        full, other = host.node("ltc-full"), host.node("ltc-ok")
        for node in (full, other):
            await host.backend.apply(node)
        await host.wait_pid("ltc-full")
        conf = host.conf("ltc-full")
        filler = fill(host.node_dir("ltc-full"))

        # Nothing to write: the apply succeeds at 100 % (it used to die writing a marker file).
        for _ in range(3):
            await host.backend.apply(full)
            await host.backend.housekeeping()
        await host.backend.observe(full)

        # A revision that changes the config file: this node's apply error, the old file kept.
        changed = next_revision(full, overrides={"files": {"node": {"maxconnections": 12}}})
        with pytest.raises(ApplyError, match="No space left on device") as failed:
            await host.backend.apply(changed)
        assert "litecoin.conf" in str(failed.value)
        assert host.conf("ltc-full") == conf
        assert temp_files(host.node_dir("ltc-full")) == []
        await host.backend.apply(other)  # the other node does not care

        # Space again: the same revision applies.
        filler.unlink()
        await host.backend.apply(changed)
        assert "maxconnections=12" in host.conf("ltc-full")
        await host.remove_all()


async def test_a_read_only_node_directory_is_not_written_without_need(
    host: LitecoinHost,
) -> None:
    ro, other = host.node("ltc-ro", desired_state="stopped"), host.node("ltc-ok")
    for node in (ro, other):
        await host.backend.apply(node)
    await host.wait_pid("ltc-ok")
    conf = host.conf("ltc-ro")
    with read_only(host.node_dir("ltc-ro")):
        # Nothing pending: applies and observes cleanly (it used to chmod on every tick).
        for _ in range(3):
            await host.backend.apply(ro)
            await host.backend.housekeeping()
        assert [p.status.value for p in await host.backend.observe(ro)] == ["stopped"]

        # Starting it needs writes (its log file, its config): this node's apply error only.
        start = next_revision(
            ro,
            desiredState="running",
            overrides={"files": {"node": {"maxconnections": 12}}},
        )
        with pytest.raises(ApplyError, match="Read-only file system"):
            await host.backend.apply(start)
        assert host.conf("ltc-ro") == conf
        await host.backend.apply(other)
        await host.backend.housekeeping()
    await host.backend.apply(start)
    await host.wait_pid("ltc-ro")


async def test_deleting_a_node_on_its_own_mount_point_empties_it(host: LitecoinHost) -> None:
    root = host.node_dir("ltc-mnt")
    with tmpfs(root, "200m"):
        node = host.node("ltc-mnt")
        await host.backend.apply(node)
        await host.wait_pid("ltc-mnt")
        deleted = node.model_copy(update={"deleted": True, "retain_data": False})
        for _ in range(2):  # a teardown may be repeated; both times it succeeds
            await host.backend.teardown(deleted)
        assert host.pids("ltc-mnt") == []
        assert await host.driver.list_units() == []
        # The data is gone as asked; the mount point is the host's and stays, empty.
        assert root.is_mount() and list(root.iterdir()) == []


async def test_what_cannot_be_deleted_is_the_node_teardown_error(host: LitecoinHost) -> None:
    node, other = host.node("ltc-stuck"), host.node("ltc-ok")
    for n in (node, other):
        await host.backend.apply(n)
    await host.wait_pid("ltc-stuck")
    pid_other = await host.wait_pid("ltc-ok")
    deleted = node.model_copy(update={"deleted": True, "retain_data": False})
    config = host.node_dir("ltc-stuck") / "config"
    with read_only(config):
        with pytest.raises(ApplyError, match="cannot remove the node's data") as failed:
            await host.backend.teardown(deleted)
        assert str(config) in str(failed.value)
        assert host.pids("ltc-stuck") == []
        await host.backend.apply(other)
        await host.backend.housekeeping()
        assert host.pids("ltc-ok") == [pid_other]
    await asyncio.sleep(0)
    await host.backend.teardown(deleted)  # retried once the mount is gone: done
    assert not host.node_dir("ltc-stuck").exists()
