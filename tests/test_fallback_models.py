"""Primary, fallback and minimal models in one program, sharing one arena: each model, run in any
order after the others, stays bit-exact with TFLM."""
import json
import subprocess

import numpy as np
import pytest

from mcuforge.codegen.emit_aot import emit_aot_models
from mcuforge.codegen.reference import run_reference
from mcuforge.codegen.tflite_model import load_tflite

from conftest import require_tool, shared_model

MODELS = [("primary", "kws_ref_model.tflite"), ("fallback", "str_ww_ref_model.tflite"), ("minimal", "ad01_int8.tflite")]

HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include "primary.h"
#include "fallback.h"
#include "minimal.h"

typedef struct { void *(*input)(int); const void *(*output)(int); int (*invoke)(void); const uint32_t *in_bytes, *out_bytes; } model;

int main(void)
{
    const model models[3] = {
        { primary_input, primary_output, primary_invoke, primary_input_bytes, primary_output_bytes },
        { fallback_input, fallback_output, fallback_invoke, fallback_input_bytes, fallback_output_bytes },
        { minimal_input, minimal_output, minimal_invoke, minimal_input_bytes, minimal_output_bytes },
    };
    int which;
    /* stdin: a model index, then its input bytes; stdout: its output bytes */
    while (fread(&which, sizeof which, 1, stdin) == 1) {
        const model *m = &models[which];
        if (fread(m->input(0), 1, m->in_bytes[0], stdin) != m->in_bytes[0]) return 2;
        if (m->invoke() != 0) return 3;
        fwrite(m->output(0), 1, m->out_bytes[0], stdout);
    }
    return 0;
}
"""


def test_models_share_one_arena_and_stay_bit_exact(tmp_path):
    require_tool("cc", "gcc")
    graphs = [(role, load_tflite(shared_model(file))) for role, file in MODELS]
    report = emit_aot_models(graphs, tmp_path / "set")
    assert [m["role"] for m in report["models"]] == ["primary", "fallback", "minimal"]
    assert report["arena_bytes"] == max(m["arena_bytes"] for m in report["models"])
    assert report["arena_bytes"] < report["arena_bytes_if_separate"]
    assert json.loads((tmp_path / "set" / "report.json").read_text())["arena_bytes"] == report["arena_bytes"]

    (tmp_path / "set" / "harness.c").write_text(HARNESS)
    exe = tmp_path / "run"
    sources = [str(p) for p in (tmp_path / "set").glob("*.c")]
    subprocess.run(["cc", "-O1", "-I", str(tmp_path / "set"), *sources, "-o", str(exe)], check=True)

    rng = np.random.default_rng(3)
    order = [0, 1, 2, 0, 2, 1, 1, 0, 2, 2, 0, 1]    # every switch between models happens
    stream, expected = b"", b""
    for which in order:
        graph = graphs[which][1]
        x = rng.integers(-128, 128, size=graph.tensors[graph.inputs[0]].shape, dtype=np.int8)
        stream += np.int32(which).tobytes() + x.tobytes()
        expected += run_reference(shared_model(MODELS[which][1]).read_bytes(), [[x]])[0][0].tobytes()
    got = subprocess.run([str(exe)], input=stream, capture_output=True, check=True).stdout
    assert got == expected


def test_model_names_must_differ(tmp_path):
    from mcuforge.codegen.errors import McuforgeError

    graph = load_tflite(shared_model("hello_world_int8.tflite"))
    with pytest.raises(McuforgeError, match="names must differ"):
        emit_aot_models([("a", graph), ("a", graph)], tmp_path / "x")
