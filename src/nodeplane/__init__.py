"""nodeplane: a self-hosted control plane for blockchain nodes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nodeplane")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
