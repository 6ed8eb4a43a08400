# Helpers for the MicroPython tests: scratch folders on the simulated flash, stub models.
import os

_counter = [0]


def rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        child = path + "/" + entry[0]
        if entry[1] == 0x4000:
            rmtree(child)
        else:
            os.remove(child)
    os.rmdir(path)


def scratch(name="t"):
    """A new, empty folder under the working directory (the board's flash)."""
    _counter[0] += 1
    path = "scratch_%s_%d" % (name, _counter[0])
    rmtree(path)
    os.mkdir(path)
    return path


class StubModel:
    """A model for tests: echoes its input (a perfect autoencoder) or returns `output`.
    cost_ms of awake time on the HAL per call; fail_when(n) -> True makes call n raise."""

    def __init__(self, name, hal=None, cost_ms=0, output=None, fail_when=None, metadata=None):
        self.name = name
        self.hal = hal
        self.cost_ms = cost_ms
        self.output = output
        self.fail_when = fail_when
        self.calls = 0
        self.failing = False
        if metadata is not None:
            self.metadata = metadata

    def invoke(self, data):
        self.calls += 1
        if self.hal is not None and self.cost_ms:
            self.hal.spend(self.cost_ms)
        if self.failing or (self.fail_when is not None and self.fail_when(self.calls)):
            raise RuntimeError("%s failed on call %d" % (self.name, self.calls))
        return bytes(data) if self.output is None else self.output
