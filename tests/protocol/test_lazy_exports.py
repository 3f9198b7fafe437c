"""nodeplane.protocol imports its names lazily; every exported name still resolves."""

import subprocess
import sys

import pytest

import nodeplane.protocol as protocol


def test_every_exported_name_resolves_to_its_submodule_definition() -> None:
    assert set(protocol.__all__) == set(protocol._SOURCES)
    for name in protocol.__all__:
        value = getattr(protocol, name)
        module = sys.modules[f"nodeplane.protocol.{protocol._SOURCES[name]}"]
        assert value is getattr(module, name)


@pytest.mark.process  # a fresh interpreter, where nothing else has imported the models
def test_importing_one_enum_does_not_build_the_models() -> None:
    code = (
        "import sys; from nodeplane.protocol import NodePhase; "
        "print('nodeplane.protocol.capabilities' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
