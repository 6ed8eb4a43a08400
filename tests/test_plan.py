import itertools

import numpy as np
import pytest

from mcuforge.codegen.analyze import Analysis, Buffer, analyze
from mcuforge.codegen.plan import plan_memory
from mcuforge.codegen.tflite_model import load_tflite

from conftest import shared_model


def _check_valid(analysis, plan):
    for a, b in itertools.combinations(analysis.buffers, 2):
        if a.overlaps(b):
            a0, b0 = plan.offsets[a.id], plan.offsets[b.id]
            assert a0 + a.size <= b0 or b0 + b.size <= a0, f"buffers {a.id} and {b.id} share bytes while both live"
    for buf in analysis.buffers:
        assert plan.offsets[buf.id] % 4 == 0
        assert plan.offsets[buf.id] + buf.size <= plan.arena_bytes


def _synthetic(buffers):
    return Analysis(graph=type("G", (), {"operators": [None] * (max(b.last for b in buffers))})(),
                    buffers=buffers, buffer_of={}, macs=[])


def test_random_lifetimes_get_valid_plans_no_smaller_than_the_bound():
    rng = np.random.default_rng(7)
    for _ in range(100):
        buffers = []
        for i in range(int(rng.integers(2, 12))):
            first = int(rng.integers(0, 10))
            buffers.append(Buffer(i, [i], int(rng.integers(1, 500)), first, first + int(rng.integers(0, 5))))
        analysis = _synthetic(buffers)
        plan = plan_memory(analysis)
        _check_valid(analysis, plan)
        assert plan.arena_bytes >= analysis.peak_live_bytes() - 3


def test_disjoint_lifetimes_share_memory():
    buffers = [Buffer(0, [0], 100, 0, 1), Buffer(1, [1], 100, 2, 3), Buffer(2, [2], 100, 4, 5)]
    assert plan_memory(_synthetic(buffers)).arena_bytes == 100


@pytest.mark.parametrize("name, tflm_head", [("ad01_int8.tflite", 768), ("hello_world_int8.tflite", None)])
def test_published_models_plan_at_the_live_bound(name, tflm_head):
    analysis = analyze(load_tflite(shared_model(name)))
    plan = plan_memory(analysis)
    _check_valid(analysis, plan)
    assert plan.arena_bytes == analysis.peak_live_bytes()
    if tflm_head is not None:  # TFLM's planned-activation figure from shared/models/SOURCES.md
        assert plan.arena_bytes <= tflm_head
