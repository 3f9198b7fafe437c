"""A real anvil on the ethereum `devnet` network: height rises, and the chain survives a restart."""

from pathlib import Path

import pytest

from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.chains.ethereum.anvil import STATE_FILE
from nodeplane.protocol import NodeSpec, ProcessStatus
from tests.chains.support import LocalProcess, probe_until, render_node

pytestmark = pytest.mark.anyio


async def test_devnet_height_rises_and_survives_stop_start(
    tmp_path: Path, anvil_binary: tuple[Path, str]
) -> None:
    binary, version = anvil_binary
    spec = NodeSpec.model_validate(
        {
            "chain": "ethereum",
            "network": "devnet",
            "clients": {"execution": {"name": "anvil", "version": version}},
        }
    )
    plan, ports = render_node(ETHEREUM, spec, tmp_path / "dev", {"execution": binary})
    assert plan.init_steps == ()  # no JWT: nothing else talks to anvil over the Engine API
    process = LocalProcess(plan.processes[0])
    process.start()
    try:
        first = await probe_until(ETHEREUM, process, lambda r: r.status == ProcessStatus.RUNNING)
        assert first.height is not None
        later = await probe_until(
            ETHEREUM, process, lambda r: (r.height or 0) >= (first.height or 0) + 2, within_s=20
        )
        assert later.status == ProcessStatus.RUNNING
        assert later.height == later.network_height
        assert process.rpc("eth_chainId") == "0x7a69"  # anvil's default 31337
    finally:
        process.stop()
    assert process.proc is not None and process.proc.returncode == 0
    assert (tmp_path / "dev" / "data" / STATE_FILE).is_file()

    restarted = LocalProcess(plan.processes[0])
    restarted.start()
    try:
        again = await probe_until(ETHEREUM, restarted, lambda r: r.status == ProcessStatus.RUNNING)
        assert again.height is not None and again.height >= (later.height or 0)
    finally:
        restarted.stop()
    assert ports["execution.http"] == int(plan.processes[0].rpc.url.rsplit(":", 1)[1])  # type: ignore[union-attr]
