"""`mcuforge verify`: the published models, bit for bit against TFLM, on the host and on an
emulated Cortex-M55; and a mismatch must fail."""
import re

import pytest
from click.testing import CliRunner

from mcuforge.host_tools import verify as verify_module
from mcuforge.host_tools.cli import cli

from conftest import require_tool, shared_model


def _verify(model: str, board: str, samples: int):
    return CliRunner().invoke(cli, ["verify", str(shared_model(model)), "--board", board, "--samples", str(samples)])


@pytest.mark.parametrize("model", ["hello_world_int8.tflite", "ad01_int8.tflite"])
def test_verify_on_host(model):
    result = _verify(model, "host", 20)
    assert result.exit_code == 0, result.output
    assert "bit-exact: 20/20" in result.output


@pytest.mark.qemu
@pytest.mark.parametrize("model", ["hello_world_int8.tflite", "ad01_int8.tflite"])
def test_verify_on_emulated_cortex_m55(model):
    require_tool("qemu-system-arm", "qemu-system-arm")
    result = _verify(model, "mps3-an547", 20)
    assert result.exit_code == 0, result.output
    assert "bit-exact: 20/20" in result.output
    instructions = int(re.search(r"instructions per inference \(QEMU -icount\): (\d+)", result.output).group(1))
    assert instructions > 0


def test_a_mismatch_fails_with_a_non_zero_exit(monkeypatch):
    """Corrupt the reference on purpose: verify must report it and exit 1."""
    real = verify_module.run_reference

    def off_by_one(model_bytes, samples, arena_size=None):
        outputs = real(model_bytes, samples, arena_size)
        outputs[1][0] = outputs[1][0].copy()
        outputs[1][0].flat[0] ^= 1
        return outputs

    monkeypatch.setattr(verify_module, "run_reference", off_by_one)
    result = _verify("hello_world_int8.tflite", "host", 3)
    assert result.exit_code == 1
    assert "bit-exact: 2/3" in result.output and "MISMATCH sample 1 output 0" in result.output


def test_verify_refuses_a_board_that_is_not_emulated():
    result = _verify("hello_world_int8.tflite", "nrf52840dk", 2)
    assert result.exit_code == 1 and "not emulated" in result.output
