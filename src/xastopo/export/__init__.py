"""Export of the champion to ONNX, with metadata and a parity check against the framework."""
