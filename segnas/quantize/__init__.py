"""What the device runs: int8 networks by ONNX Runtime's post-training static quantization.

Edge targets run 8-bit networks (GAP8's NNTool takes only 8- or 16-bit ones), and int8 does not
scale every network alike, so a float32 ranking is not the device's. This package turns a
trained network into the int8 ONNX file a device runs and says what that costs in accuracy and
gains in latency and size:

- :mod:`.static`: the ONNX Runtime quantization itself (pre-processing, QDQ format, per-channel
  weights, a calibration method), the layers kept in float (``quantize.keep_float``) and what an
  int8 graph left in float, read back from the file;
- :mod:`.calibration`: the calibration reader, images through the run's evaluation transform at the
  deployment size;
- :mod:`.sensitivity`: each compute layer's error when it alone is int8, and the automatic
  mode's search for the fewest layers to keep in float (``quantize.mode=auto``);
- :mod:`.scoring`: a float32 and an int8 ONNX Runtime session scored by the same whole-image
  evaluator, with what changed between them;
- :mod:`.latency`: ``hardware=onnx_cpu_int8``, measured int8 latency as a search cost.

Imports ``onnx`` and ``onnxruntime`` (the ``segnas[onnx]`` extra) only where it quantizes, and
nothing of segnas above ``hardware``, ``evaluation`` and ``metrics``.
"""
