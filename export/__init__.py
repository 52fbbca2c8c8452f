"""sdrt.export: the export stage (export specs, ONNX, TensorRT, Core ML).

Installed from the repository's top-level ``export/`` folder as ``sdrt.export``. The exporters
arrive with the export issue; this package holds what they share.
"""
__all__: list[str] = []
