"""convscope export stage: train a CNN, export it to ONNX with its feature maps."""
