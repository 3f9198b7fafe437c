"""The Containerfile, followed on a machine with no container engine.

Its build stage's install steps (every RUN after the stage's first COPY from the build context;
the ones before only install the base image's system packages) run with the same commands and
ENV in a temporary root: container paths map to `<root>/<path>`, the base images' interpreter
and the uv image's binary to this machine's Python 3.11 and ./dev's pinned uv, the build context
to a clean copy of the repository's tracked files. The ENTRYPOINT then runs with the Deployment's
arguments plus `--help`, with the runtime stage's ENV alone (no repository on sys.path).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"
DEPLOYMENT = REPO / "deploy/kubernetes/operator/deployment.yaml"
UV_IMAGE = "ghcr.io/astral-sh/uv"
# What the runtime base (distroless python3-debian12) and the build base (Debian 12's python3.11)
# provide at this path; this machine's Python 3.11 stands in for both.
BASE_PYTHON = "/usr/bin/python3.11"
# This machine's way to the package index (a proxy, its CA), which a builder would have too.
NETWORK_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_NATIVE_TLS",
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for instruction in self.all("ENV"):
            out.update(pairs(instruction.args))
        return out


def pairs(args: str) -> dict[str, str]:
    """`K=V K2="V 2"` (the ENV and LABEL forms) as a dict."""
    out = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        assert sep, f"{token!r}: only the KEY=VALUE form is followed"
        out[key] = value
    return out


def instructions(text: str) -> Iterator[Instruction]:
    """Instructions with their continuation lines joined; comment lines dropped (as a builder
    drops them, also inside a continued instruction)."""
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        yield Instruction(keyword.upper(), rest.strip())
        current = ""
    assert not current, "the Containerfile ends inside a continued instruction"


def stages(text: str) -> list[Stage]:
    out: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            assert not words[0].startswith("--"), "FROM flags are not followed"
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            out.append(Stage(words[0], name))
        else:
            assert out, f"{instruction.keyword} before the first FROM"
            out[-1].instructions.append(instruction)
    return out


def header_value(text: str, key: str) -> str:
    match = re.search(rf"^#\s+{key}:\s+(\S+)", text, re.M)
    assert match, f"the Containerfile's header documents `{key}:`"
    return match.group(1)


def dev_uv_version() -> str:
    match = re.search(r"^UV_VERSION=(\S+)$", (REPO / "dev").read_text(), re.M)
    assert match
    return match.group(1)


def dev_uv() -> Path:
    """./dev's bootstrapped uv (`./dev test` installs it)."""
    cache = Path(os.environ.get("NODEPLANE_CACHE", "/var/cache/nodeplane"))
    uv = cache / "bootstrap/bin/uv"
    assert uv.exists(), f"{uv} is missing: ./dev test bootstraps it"
    return uv


def deployment_container() -> dict[str, Any]:
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def clean_copy(target: Path) -> None:
    """The build context: the repository's tracked files as they are in the working tree (what
    a fresh clone with these edits holds; no .venv, caches or untracked files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the working tree
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest, follow_symlinks=False)


class Root:
    """A stand-in for a container's filesystem: `/x/y` is `<root>/x/y`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, container_path: str) -> Path:
        posix = PurePosixPath(container_path)
        assert posix.is_absolute(), container_path
        return self.path.joinpath(*posix.parts[1:])

    def rebase(self, value: str) -> str:
        """An ENV value with its absolute paths (colon-separated lists too) mapped."""
        parts = value.split(":")
        if all(p.startswith("/") for p in parts):
            return ":".join(str(self(p)) for p in parts)
        return value


@dataclass(frozen=True)
class Built:
    root: Root
    runtime: Stage
    text: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The Containerfile's build stage, run on this machine into a temporary root."""
    text = CONTAINERFILE.read_text()
    all_stages = stages(text)
    named = {s.name: s for s in all_stages if s.name}
    build, runtime = named["build"], all_stages[-1]
    root = Root(tmp_path_factory.mktemp("image-root"))
    context = tmp_path_factory.mktemp("context")
    clean_copy(context)

    # What the base images bring: Python 3.11 (build and runtime) and the uv binary.
    assert sys.version_info[:2] == (3, 11), "the image's Python is 3.11"
    base_python = Path(sys.base_prefix) / "bin" / "python3.11"
    root(BASE_PYTHON).parent.mkdir(parents=True)
    root(BASE_PYTHON).symlink_to(base_python)
    tools = {s.name: s.image for s in all_stages if s.name and s.image.startswith(UV_IMAGE + ":")}
    assert set(tools.values()) == {f"{UV_IMAGE}:{dev_uv_version()}"}, "the uv that ./dev pins"

    env = {
        **{k: v for k, v in os.environ.items() if k in NETWORK_ENV},
        "PATH": f"{root('/usr/local/bin')}:/usr/bin:/bin",
        "HOME": str(root("/root")),
        # The test machine's uv cache (./dev's location): the same downloads, fetched once.
        "UV_CACHE_DIR": os.environ.get(
            "UV_CACHE_DIR",
            str(Path(os.environ.get("NODEPLANE_CACHE", "/var/cache/nodeplane")) / "uv"),
        ),
    }
    workdir = root("/")
    copied = False
    for instruction in build.instructions:
        words = instruction.args.split()
        if instruction.keyword == "ENV":
            env.update({k: root.rebase(v) for k, v in pairs(instruction.args).items()})
        elif instruction.keyword == "WORKDIR":
            workdir = root(instruction.args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and words[0].startswith("--from="):
            stage = words[0].removeprefix("--from=")
            assert stage in tools and words[1:] == ["/uv", "/usr/local/bin/uv"], words
            root("/usr/local/bin").mkdir(parents=True, exist_ok=True)
            root("/usr/local/bin/uv").symlink_to(dev_uv())
        elif instruction.keyword == "COPY":
            *sources, dest = words
            target = workdir / dest
            for source in sources:
                path = context / source
                if path.is_dir():
                    # A directory's contents go into the destination, as a builder copies them.
                    shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
            copied = True
        elif instruction.keyword == "RUN" and not copied:
            # Before the first COPY: the base image's system packages, nothing of nodeplane.
            commands = [c.strip() for c in instruction.args.split("&&")]
            assert all(c.startswith(("apt-get ", "rm -rf /var/lib/apt")) for c in commands), (
                f"only system packages are installed before the first COPY: {instruction.args}"
            )
        elif instruction.keyword == "RUN":
            done = subprocess.run(
                ["/bin/sh", "-c", instruction.args],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{instruction.args}\n{done.stdout}\n{done.stderr}"
        else:
            raise AssertionError(f"the test does not follow {instruction.keyword} in the build")
    return Built(root, runtime, text)


def runtime_env(built: Built) -> dict[str, str]:
    """The runtime stage's ENV, and the HOME distroless's nonroot user has: nothing else."""
    env = {k: built.root.rebase(v) for k, v in built.runtime.env().items()}
    return {**env, "HOME": str(built.root("/home/nonroot"))}


def test_the_runtime_stage_is_the_venv_on_distroless_as_a_numeric_non_root_user(
    built: Built,
) -> None:
    runtime = built.runtime
    assert runtime.image.startswith("gcr.io/distroless/python3-debian12:")
    # Nothing but the build stage's venv, at the path its scripts' #! lines name.
    copies = [i.args.split() for i in runtime.all("COPY")]
    venv = stages(built.text)[1].env()["VENV"]
    assert copies == [["--from=build", venv, venv]]
    assert not runtime.all("RUN"), "the runtime stage has no shell to run anything"
    (user,) = runtime.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()
    # The Deployment's runAsNonRoot can only check a numeric user; it names the same one.
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (int(uid), int(gid))
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["nodeplane"]


def test_the_image_reference_is_the_one_the_deployment_and_readme_name(built: Built) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    reference = header_value(built.text, "image")
    assert reference == f"ghcr.io/nodeplane/nodeplane:{version}"
    labels: dict[str, str] = {}
    for label in built.runtime.all("LABEL"):
        labels.update(pairs(label.args))
    assert labels["org.opencontainers.image.version"] == version
    assert f"-t {reference} " in header_value_line(built.text, "build")
    assert deployment_container()["image"] == reference
    assert reference in (REPO / "README.md").read_text()


def header_value_line(text: str, key: str) -> str:
    match = re.search(rf"^#\s+{key}:\s+(.*)$", text, re.M)
    assert match
    return match.group(1) + " "


def test_the_entrypoint_starts_the_operator_from_the_venv_alone(built: Built) -> None:
    env = runtime_env(built)
    (entrypoint,) = built.runtime.all("ENTRYPOINT")
    command = json.loads(entrypoint.args)
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None, f"{command[0]} is on the image's PATH"
    venv = built.root(stages(built.text)[1].env()["VENV"])
    assert Path(executable).is_relative_to(venv)
    args = deployment_container()["args"]
    assert args[:2] == ["operator", "run"]
    done = subprocess.run(
        [executable, *command[1:], *args, "--help"],
        cwd=built.root("/"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: nodeplane operator run" in done.stdout
    assert "--state-dir" in done.stdout and "--log-format" in done.stdout

    # What that process imported from: the venv's site-packages, never this checkout, and no
    # development dependency was installed.
    probe = (
        "import importlib.util, json, sys, nodeplane.cli.main; "
        "print(json.dumps({'file': nodeplane.__file__, 'path': sys.path, "
        "'pytest': importlib.util.find_spec('pytest') is not None}))"
    )
    seen = subprocess.run(
        [str(venv / "bin/python"), "-c", probe],
        cwd=built.root("/"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(seen.stdout)
    assert Path(found["file"]).is_relative_to(venv / "lib")
    assert not [p for p in found["path"] if p and Path(p).resolve().is_relative_to(REPO)]
    assert found["pytest"] is False
    # Compiled at install (UV_COMPILE_BYTECODE), since the root filesystem is read-only.
    assert list((Path(found["file"]).parent / "__pycache__").glob("__init__.cpython-311*.pyc"))
