"""System 1 exported to ONNX: ONNX Runtime's trajectories against the torch paths on the same
inputs and noise (tiny config, CPU)."""
import pytest
import torch
from test_system1_sampling import inputs, live_model, sample

from openhelix_core.models.system1 import SamplerConfig, System1Config
from openhelix_core.models.system1.export_system1 import OnnxSystem1, export_system1

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export's translator


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model and its runner (one export: it takes tens of seconds)."""
    config = System1Config.tiny()
    model = live_model(config)
    directory = tmp_path_factory.mktemp("system1_onnx")
    export_system1(model, directory, inputs(config, batch_size=2))
    return model, OnnxSystem1(model, directory, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("sampler", [SamplerConfig(method="ddpm"), SamplerConfig(method="ddim", steps=3)],
                         ids=["ddpm", "ddim-3"])
@pytest.mark.parametrize("batch_size", [1, 3])  # neither is the export's batch size
def test_onnx_runtime_reproduces_the_torch_paths(exported, sampler, batch_size):
    model, runner = exported
    batch = inputs(model.config, batch_size=batch_size, seed=4)
    onnx = sample(runner, batch, sampler)
    reference = sample(model, batch, SamplerConfig(sampler.method, sampler.steps, fast=False))
    fast = sample(model, batch, SamplerConfig(sampler.method, sampler.steps, fast=True))
    assert onnx.shape == (batch_size, model.config.trajectory_length, 8)
    torch.testing.assert_close(onnx, reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx, fast, atol=1e-4, rtol=0)
    # other noise gives another trajectory: the runner really follows the generator
    assert (sample(runner, batch, sampler, seed=5) - onnx).abs().max() > 1e-3


def test_onnx_runtime_holds_committed_waypoints(exported):
    model, runner = exported
    batch = inputs(model.config)
    sampler = SamplerConfig(method="ddim", steps=3)
    committed = sample(model, batch, sampler, seed=9)[:, :4]
    onnx = sample(runner, batch, sampler, committed=committed)
    torch.testing.assert_close(onnx[:, :4], committed, atol=0, rtol=0)
    torch.testing.assert_close(onnx, sample(model, batch, sampler, committed=committed), atol=1e-4, rtol=0)
