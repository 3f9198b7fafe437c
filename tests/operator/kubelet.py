"""A stand-in kubelet for one Pod of the test cluster, which has none: it runs the Pod's real
commands on this machine and writes the Pod's status to the API server as a kubelet would.

What it does, as a kubelet does for a Pod of a node:
- the network: the Pod gets its own network namespace (`ip netns`) with a veth pair, so its
  containers share one loopback (RPC on 127.0.0.1, the adapters' default ports, which then
  cannot collide with other tests' litecoind on this host) and the operator reaches the Pod IP
  from outside, as it would reach a real pod;
- the volumes: `/node` is a temp directory. Each container runs in its own mount namespace
  (`unshare -m`) whose root is a tmpfs holding bind mounts of the host's system directories plus
  that directory at `/node`, then `chroot` into it. So the rendered argv runs unchanged (a path
  rewrite of argv would not test what the renderer wrote). The ConfigMap's files are written
  where the containers mount them (by subPath); `readOnly` is not enforced;
- the images: the host's binaries stand in, found on PATH (`litecoind` from /usr/lib/litecoin,
  `nodeplane` from the test's venv with the code under test on PYTHONPATH);
- init containers run to completion first; then every container starts; a loop writes each
  container's state (running or terminated, with its exit code) and readiness (its
  readinessProbe's httpGet on the Pod IP, as the kubelet asks it; ready while running if none),
  the Pod IP and the conditions, whenever they change.
"""

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from lightkube import Client
from lightkube.resources.core_v1 import ConfigMap, Pod
from lightkube.types import PatchType

import nodeplane

# Host directories a container sees (its "image"): system files, then the venv, the Python it
# links to and the code under test, bound at their own paths wherever the checkout lives.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "var")


def _code_paths() -> tuple[str, ...]:
    """The venv (as named and as resolved), its base Python and the checkout's src directory."""
    paths = (
        Path(sys.prefix),
        Path(sys.prefix).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(nodeplane.__file__).resolve().parents[1],
    )
    return tuple(dict.fromkeys(str(p) for p in paths))


DAEMON_DIRS = ("/usr/lib/litecoin",)
# Mount the container's root, then exec its command in it: $1 root, $2 node dir, $3 working
# directory, the rest the command. Symlinked top-level dirs (merged /usr) are recreated as links.
SANDBOX = r"""
set -e
root=$1 node=$2 workdir=$3
shift 3
mount -t tmpfs -o mode=0755 nodeplane-pod "$root"
for d in $SYSTEM_DIRS; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d"
  elif [ -d "/$d" ]; then mkdir "$root/$d"; mount --rbind "/$d" "$root/$d"
  fi
done
mkdir "$root/proc" "$root/dev" "$root/tmp" "$root/node"
mount --rbind /proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
mount --bind "$node" "$root/node"
for p in $CODE_PATHS; do
  mkdir -p "$root$p"; mount --rbind "$p" "$root$p"
done
exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$workdir" "$@"
"""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.251.0.0/16 that no interface of this host uses."""
    used = subprocess.run(
        ["ip", "-4", "-o", "addr"], check=True, capture_output=True, text=True
    ).stdout
    for _ in range(100):
        third, fourth = random.randrange(256), random.randrange(64) * 4
        net = ipaddress.IPv4Network(f"10.251.{third}.{fourth}/30")
        if (
            f" {net.network_address + 1}/" not in used
            and f" {net.network_address + 2}/" not in used
        ):
            return net
    raise RuntimeError("no free /30 in 10.251.0.0/16")


class LocalKubelet:
    """Runs one Pod's containers locally and keeps its status written (a context manager)."""

    def __init__(self, kube: Client, namespace: str, pod: str, workdir: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pod_name = pod
        self.workdir = workdir
        self.node_dir = workdir / "node"
        tag = uuid.uuid4().hex[:8]
        self.netns = f"np-{tag}"
        self.host_veth, self.pod_veth = f"nph{tag}", f"npp{tag}"
        subnet = _free_subnet()
        self.host_ip = str(subnet.network_address + 1)
        self.pod_ip = str(subnet.network_address + 2)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.spec: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: Any = None
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join(
                [*DAEMON_DIRS, str(Path(sys.executable).parent), os.environ.get("PATH", "")]
            ),
            # The code under test, whichever checkout the venv was installed from.
            "PYTHONPATH": str(Path(nodeplane.__file__).resolve().parents[1]),
            "PYTHONUNBUFFERED": "1",
            "SYSTEM_DIRS": " ".join(SYSTEM_DIRS),
            "CODE_PATHS": " ".join(_code_paths()),
        }
        self._http = httpx.Client(timeout=1.0, trust_env=False)

    # ---- set up ------------------------------------------------------------------------------

    def __enter__(self) -> "LocalKubelet":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, AssertionError):
            # The pod's own output says why (pytest's temp dirs may be pruned by other runs).
            exc.args = (f"{exc.args[0] if exc.args else ''}\n{self.diagnose()}",)
        self.close()

    def start(self) -> None:
        """Network, volumes, init containers, containers; then keep the status written."""
        self.spec = self.kube.get(Pod, self.pod_name, namespace=self.namespace).spec
        self._network()
        self._volumes()
        for init in self.spec.initContainers or []:
            proc = self._spawn(init)
            code = proc.wait(timeout=60)
            assert code == 0, f"init container {init.name} exited {code}: {self.log(init.name)}"
        for container in self.spec.containers:
            self.processes[container.name] = self._spawn(container)
        self._thread = threading.Thread(target=self._status_loop, daemon=True)
        self._thread.start()

    def _network(self) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.pod_veth)
        _run("ip", "link", "set", self.pod_veth, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_veth)
        _run("ip", "link", "set", self.host_veth, "up")
        inside = ("ip", "netns", "exec", self.netns)
        _run(*inside, "ip", "addr", "add", f"{self.pod_ip}/30", "dev", self.pod_veth)
        _run(*inside, "ip", "link", "set", self.pod_veth, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def _volumes(self) -> None:
        """/node/data (the claim), /node/config (the emptyDir) and the ConfigMap's files."""
        (self.node_dir / "data").mkdir(parents=True)
        (self.node_dir / "config").mkdir()
        maps = {
            v.name: v.configMap.name for v in self.spec.volumes or [] if v.configMap is not None
        }
        data: dict[str, dict[str, str]] = {}
        for volume, name in maps.items():
            config_map = self.kube.get(ConfigMap, name, namespace=self.namespace)
            data[volume] = dict(config_map.data or {})
        for container in [*(self.spec.initContainers or []), *self.spec.containers]:
            for mount in container.volumeMounts or []:
                if mount.name in data and mount.subPath:
                    relative = Path(mount.mountPath).relative_to("/node")
                    target = self.node_dir / relative
                    target.write_text(data[mount.name][mount.subPath])
                    target.chmod(0o444)

    def _spawn(self, container: Any) -> subprocess.Popen[bytes]:
        root = self.workdir / "roots" / container.name
        root.mkdir(parents=True, exist_ok=True)
        env = {**self.env, **{e.name: e.value for e in container.env or []}}
        log = (self.workdir / f"{container.name}.log").open("ab")
        argv = self._in_pod(
            root, container.workingDir, [*container.command, *(container.args or [])]
        )
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def _in_pod(self, root: Path, working_dir: str | None, argv: list[str]) -> list[str]:
        """`argv` run in the pod's network namespace and a private mount namespace rooted at
        `root`, with the node's directory at /node (SANDBOX)."""
        return [
            *("ip", "netns", "exec", self.netns),
            *("unshare", "-m", "--propagation", "private"),
            *("sh", "-c", SANDBOX, "sandbox", str(root), str(self.node_dir)),
            working_dir or "/",
            *argv,
        ]

    # ---- what a test does to the pod ----------------------------------------------------------

    def log(self, container: str) -> str:
        """A container's output so far."""
        path = self.workdir / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnose(self) -> str:
        """Every container's output and the kubelet's own errors, for a failing test."""
        parts = [f"--- {name} ---\n{self.log(name)[-3000:]}" for name in self.processes]
        own = self.workdir / "kubelet.log"
        if own.exists():
            parts.append(f"--- kubelet ---\n{own.read_text()[-3000:]}")
        return "\n".join(parts)

    def exec(self, container: str, argv: list[str]) -> str:
        """Run `argv` in the container's network and filesystem (`kubectl exec`); its stdout."""
        spec = next(c for c in self.spec.containers if c.name == container)
        root = self.workdir / "roots" / f"exec-{uuid.uuid4().hex[:6]}"
        root.mkdir(parents=True)
        done = subprocess.run(
            self._in_pod(root, spec.workingDir, argv),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr}"
        return done.stdout

    def stop_container(self, container: str, timeout: float = 60) -> int:
        """SIGTERM a container's process and wait for it (the kubelet reports it terminated)."""
        proc = self.processes[container]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=timeout)

    # ---- status ------------------------------------------------------------------------------

    def _ready(self, container: Any) -> bool:
        probe = container.readinessProbe
        if probe is None or probe.httpGet is None:
            return True
        url = f"http://{self.pod_ip}:{probe.httpGet.port}{probe.httpGet.path}"
        try:
            return 200 <= self._http.get(url).status_code < 400
        except httpx.HTTPError:
            return False

    def _container_status(self, container: Any) -> dict[str, Any]:
        proc = self.processes[container.name]
        code = proc.poll()
        if code is None:
            state: dict[str, Any] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
            ready = self._ready(container)
        else:
            # A killed process reports 128 + the signal, as container runtimes do.
            exit_code = code if code >= 0 else 128 - code
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": "2026-01-01T00:00:00Z",
                    "finishedAt": "2026-01-01T00:00:01Z",
                }
            }
            ready = False
        return {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "restartCount": 0,
            "ready": ready,
            "state": state,
        }

    def _status(self) -> dict[str, Any]:
        statuses = [self._container_status(c) for c in self.spec.containers]
        ready = "True" if all(s["ready"] for s in statuses) else "False"
        conditions = [
            ("Initialized", "True"),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", "True"),
        ]
        return {
            "phase": "Running",
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "hostIP": self.host_ip,
            "conditions": [{"type": t, "status": s} for t, s in conditions],
            "containerStatuses": statuses,
        }

    def sync(self) -> None:
        """Write the Pod's status if it changed since the last write."""
        status = self._status()
        if status == self._written:
            return
        body = {
            **status,
            "startTime": _now(),
            "conditions": [{**c, "lastTransitionTime": _now()} for c in status["conditions"]],
        }
        self.kube.patch(
            Pod.Status,
            self.pod_name,
            {"status": body},
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
        )
        self._written = status

    def _status_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # a test's cluster going away at its end; kept for a failure
                with (self.workdir / "kubelet.log").open("a") as log:
                    log.write(f"{_now()} {type(exc).__name__}: {exc}\n")
            self._stop.wait(0.5)

    # ---- tear down ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the status loop and every process; remove the network namespace."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._http.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, timeout=30)
