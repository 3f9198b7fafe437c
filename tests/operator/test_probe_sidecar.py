"""Heights through the probe sidecar: the rendered pod run for real, the operator reading it.

The test cluster has no kubelet, so tests/operator/kubelet.py plays it: it runs the rendered Pod's
own commands (litecoind regtest and `nodeplane operator probe`) in a network namespace of their
own with `/node` mapped to a temp dir, and writes the Pod's status. The controller then reads the
sidecar at the Pod IP, and `.status` and the backend's observation (what the control plane gets)
carry the real height, which mining raises; a stopped litecoind makes the sidecar say not ready.
"""

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from nodeplane.executor.operator.images import PROBE_PORT_DEFAULT
from nodeplane.executor.operator.resource import BlockchainNode
from nodeplane.protocol import ProcessStatus
from tests.chains.support import ensure_chain_clients
from tests.operator.harness import exists, litecoin_assigned, operator_loop
from tests.operator.kubelet import LocalKubelet
from tests.support.calls import wait_until
from tests.support.kube import KubeTestCluster

pytestmark = [
    pytest.mark.usefixtures("blockchainnode_crd"),
    pytest.mark.chain,
    pytest.mark.process,
]

LITECOIN_CLI = [
    "litecoin-cli",
    "-datadir=/node/data",
    "-conf=/node/config/litecoin.conf",
]


def _node_status(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    bn = kube.get(BlockchainNode, name, namespace=namespace)
    return bn.status if isinstance(bn.status, dict) else {}


def _container(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    containers = _node_status(kube, name, namespace).get("containers") or [{}]
    entry: dict[str, Any] = containers[0]
    return entry


def test_the_sidecar_reports_heights_into_status_and_readiness(
    kube_cluster: KubeTestCluster, kube: Client, namespace: str, tmp_path: Path
) -> None:
    ensure_chain_clients()
    name = f"ltc-{uuid.uuid4().hex[:6]}"
    node = litecoin_assigned(name)
    with operator_loop(kube_cluster, namespace, probe_interval=1.0) as op:
        op.run(op.backend.apply(node))
        wait_until(
            lambda: exists(kube, Pod, f"{name}-0", namespace),
            timeout=30,
            what="the StatefulSet controller to create the pod",
        )
        # Before any container runs, nothing is probed: the kubelet's view stands.
        assert "height" not in _container(kube, name, namespace)

        with LocalKubelet(kube, namespace, f"{name}-0", tmp_path) as kubelet:
            # A fresh regtest chain: running at height 0, with no peers (DESIGN §6).
            entry = wait_until(
                lambda: (
                    (c := _container(kube, name, namespace)).get("status") == "running"
                    and c.get("height") == 0
                    and c
                ),
                timeout=90,
                what="height 0 in .status",
            )
            assert entry["peers"] == 0 and entry["syncProgress"] == 1.0
            assert _node_status(kube, name, namespace)["height"] == 0
            assert _node_status(kube, name, namespace)["phase"] == "Running"

            mined = kubelet.exec("node", [*LITECOIN_CLI, "generatetodescriptor", "7", "raw(51)"])
            assert mined.count('"') >= 14, mined  # seven block hashes
            wait_until(
                lambda: _container(kube, name, namespace).get("height") == 7,
                timeout=30,
                what="the mined height in .status",
            )
            assert _node_status(kube, name, namespace)["height"] == 7
            # What the control plane gets: the backend's observation of the node.
            (process,) = op.run(op.backend.observe(node))
            assert (process.status, process.height, process.network_height, process.peers) == (
                ProcessStatus.RUNNING,
                7,
                7,
                0,
            )

            # The sidecar itself: read-only numbers and statuses, never the cookie.
            base = f"http://{kubelet.pod_ip}:{PROBE_PORT_DEFAULT}"
            with httpx.Client(timeout=5, trust_env=False) as http:
                status = http.get(f"{base}/status")
                assert status.status_code == 200
                assert status.json()["roles"]["node"]["height"] == 7
                cookie = (kubelet.node_dir / "data/regtest/.cookie").read_text().split(":")[1]
                assert cookie not in status.text
                assert http.get(f"{base}/ready").status_code == 200
                assert http.get(f"{base}/ready/node").status_code == 200
                assert http.post(f"{base}/status").status_code == 405

                # litecoind stops: its RPC no longer answers, so the sidecar says not ready.
                kubelet.stop_container("node")
                wait_until(
                    lambda: http.get(f"{base}/ready").status_code == 503,
                    timeout=30,
                    what="the sidecar to say not ready",
                )
                role = http.get(f"{base}/status").json()["roles"]["node"]
                assert role["status"] == "starting" and role["message"]
            wait_until(
                lambda: _container(kube, name, namespace).get("status") == "stopped",
                timeout=30,
                what="the stopped container in .status",
            )
