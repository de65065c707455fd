"""convscope service: serve CNN artifacts with onnxruntime over HTTP."""
