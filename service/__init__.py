"""convscope service: serve CNN artifacts with onnxruntime over HTTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convscope")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
