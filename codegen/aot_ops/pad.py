"""PAD and PADV2, int8: the input surrounded by a constant, in up to 5 dimensions.

PAD fills with the output zero point (a real 0); PADV2 with its scalar constant-value input, which
TFLM requires to carry the output's quantization. The paddings must be a constant int32 tensor:
TFLM reads them as int32 when the model is prepared.
"""
from __future__ import annotations

from ..errors import McuforgeError
from .checks import op_location as _where, per_tensor_quantization as _quantization, require_int8

OPCODE = ("PAD", "PADV2")
KERNEL_SOURCES = ["portable/pad_s8.c"]
KERNEL_HEADERS = ["pad_s8.h"]
IS_VIEW = False

MAX_DIMS = 5  # TFLM's PadKernelMaxDimensionCount(); the kernel's MF_PAD_DIMS


def _paddings(graph, op) -> list[tuple[int, int]]:
    data = graph.tensor(op.inputs[1]).data.reshape(-1, 2)
    return [(int(before), int(after)) for before, after in data]


INCONSISTENT = "the model file is inconsistent; export it again"


def _fail(graph, op, what: str, tensor: int | None = None, fix: str = INCONSISTENT):
    raise McuforgeError(f"{op.opcode} at node {op.index} {what}", where=_where(graph, op, tensor), fix=fix)


def check(graph, op) -> None:
    if len(op.inputs) not in (2, 3) or (op.opcode == "PAD" and len(op.inputs) != 2):
        _fail(graph, op, f"has {len(op.inputs)} inputs")
    require_int8(graph, op, [op.inputs[0], op.outputs[0]])
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    rank = len(source.shape)
    if rank > MAX_DIMS:
        _fail(graph, op, f"pads a {rank}-D tensor; TFLM's PAD handles at most {MAX_DIMS} dimensions",
              fix="reshape to at most 5 dimensions before padding")
    paddings = graph.tensor(op.inputs[1])
    if paddings is None or not paddings.is_constant:
        _fail(graph, op, "has non-constant paddings", op.inputs[1],
              fix="use constant paddings (TFLM needs them when the model is prepared)")
    if paddings.dtype != "INT32":
        _fail(graph, op, f"has {paddings.dtype} paddings; TFLM reads the paddings as int32 (a model with "
                         f"{paddings.dtype} paddings fails to prepare in TFLM as well)", op.inputs[1],
              fix="export the paddings as int32 (tf.pad with an int32 paddings tensor)")
    if paddings.data.size != 2 * len(result.shape) or len(result.shape) != rank:
        _fail(graph, op, f"has paddings of shape {list(paddings.shape)} for a {rank}-D input", op.inputs[1])
    pads = _paddings(graph, op)
    if any(before < 0 or after < 0 for before, after in pads):
        _fail(graph, op, f"has negative paddings {pads}", op.inputs[1], fix="crop with a slice instead")
    for d, (before, after) in enumerate(pads):
        if result.shape[d] != source.shape[d] + before + after:
            _fail(graph, op, f"pads shape {list(source.shape)} by {pads} but its output has shape {list(result.shape)}")
    for t in (op.inputs[0], op.outputs[0]):
        if graph.tensor(t).per_channel:
            _fail(graph, op, "has a per-channel quantized activation", t,
                  fix="quantize activations per tensor (`mcuforge convert` does this)")
    if _quantization(source) != _quantization(result):
        _fail(graph, op, f"has input quantization {_quantization(source)} and output quantization "
                         f"{_quantization(result)}; TFLM copies the bytes without requantizing",
              fix="let the converter keep the input's quantization on the padded tensor")
    if len(op.inputs) == 3 and op.inputs[2] >= 0:
        value = graph.tensor(op.inputs[2])
        if value.dtype != "INT8" or not value.is_constant or value.data.size != 1:
            _fail(graph, op, f"has a {'constant' if value.is_constant else 'computed'} {value.dtype} fill value "
                             f"of {value.data.size if value.is_constant else '?'} elements; a constant int8 scalar "
                             f"is expected", op.inputs[2], fix="pad with a constant value")
        if _quantization(value) != _quantization(result):
            _fail(graph, op, f"has a fill value quantized as {_quantization(value)} but an output quantized as "
                             f"{_quantization(result)}; TFLM requires them to be equal", op.inputs[2],
                  fix="quantize the model with `mcuforge convert`, which keeps them equal")
    elif result.zero_point is not None and not -128 <= int(result.zero_point[0]) <= 127:
        _fail(graph, op, f"has output zero point {int(result.zero_point[0])}, outside int8",
              fix="quantize the model with `mcuforge convert`")


def macs(graph, op) -> int:
    return 0


def _merged(shape, pads) -> tuple[list[int], list[tuple[int, int]]]:
    """Fold every unpadded dimension into its outer neighbour: fewer, longer rows; same bytes."""
    sizes, merged = [int(s) for s in shape], list(pads)
    d = len(sizes) - 1
    while d > 0:
        if merged[d] == (0, 0):
            inner = sizes.pop(d)
            merged.pop(d)
            sizes[d - 1] *= inner
            merged[d - 1] = (merged[d - 1][0] * inner, merged[d - 1][1] * inner)
        d -= 1
    missing = MAX_DIMS - len(sizes)
    return [1] * missing + sizes, [(0, 0)] * missing + merged


def emit(graph, op, ctx) -> str:
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    sizes, pads = _merged(source.shape, _paddings(graph, op))
    if len(op.inputs) == 3 and op.inputs[2] >= 0:
        value = int(graph.tensor(op.inputs[2]).data.ravel()[0])
    else:
        value = int(result.zero_point[0]) if result.zero_point is not None else 0
    as_c = lambda values: "{" + ", ".join(str(int(v)) for v in values) + "}"  # noqa: E731
    params = ctx.params("mf_pad_params", {
        "input_size": as_c(sizes),
        "before": as_c(p[0] for p in pads),
        "after": as_c(p[1] for p in pads),
        "value": value,
    })
    return f"mf_pad_s8(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"
