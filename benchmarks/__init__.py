"""Benchmarks of the convscope service (issue 5): raw onnxruntime, the service over HTTP,
and a naive PyTorch-eager FastAPI baseline, measured in one run on one machine.

``make bench`` (or ``python -m benchmarks.run``); see benchmarks/README.md.
"""
