import pytest

import sdrt


@pytest.fixture(scope="session")
def controlled_export(tmp_path_factory):
    """The toy model exported to ONNX with both toy ControlNets (its UNet is `unet_controlled`);
    shared by the ONNX Runtime and OpenVINO tests. Tests must not write into it."""
    from sdrt.export import to_onnx

    out = tmp_path_factory.mktemp("toy_cn_export")
    manifest = to_onnx(sdrt.load("toy"), str(out), controlnets=["toy_canny", "toy_seg"])
    return out, manifest
