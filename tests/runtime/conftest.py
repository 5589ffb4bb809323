import pytest

from tests.helpers import saved_model


@pytest.fixture(scope="session")
def model_t32(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("rt-models") / "t32", "taxoclip-vit-t32", seed=3)


@pytest.fixture(scope="session")
def exported_t32(model_t32, tmp_path_factory):
    """The tiny 32-px model exported with its int8 files and text tower."""
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx

    out = tmp_path_factory.mktemp("rt-export") / "t32x"
    result = export_onnx(ExportOnnxConfig(model=str(model_t32), out=str(out), int8=True))
    return out, result
