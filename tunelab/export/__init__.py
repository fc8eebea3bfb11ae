"""Ways out of tunelab: a run written as ONNX (with int8 quantization) or GGUF, each checked by the runtime that will load it."""
