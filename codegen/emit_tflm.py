"""Emit for the TFLM engine: the model as an aligned C array, an exact op resolver, a report.

The firmware links the TFLM library of its SDK (Zephyr's tflite-micro module,
esp-tflite-micro, or the CMSIS pack) and needs three things from us:
- the flatbuffer as a 16-byte-aligned `const` array (TFLM reads it in place, from flash);
- a `tflite::MicroMutableOpResolver<N>` holding exactly the model's operators, so the linker
  drops every kernel the model does not use;
- the tensor arena size, measured with the TFLM interpreter rather than guessed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .c_source import c_hex_bytes, c_identifier
from .errors import McuforgeError
from .quantize import tensor_summary
from .reference import measure_tflm_arena
from .tflite_model import Graph, load_tflite

ENGINE = "tflm"
DATA_ALIGNMENT = 16

# Operators whose kernels need hardware the host interpreter does not have: TFLM on the host
# cannot allocate such a model, so its arena cannot be measured here.
HOST_UNRUNNABLE_OPS = {"CUSTOM:ethos-u": "the Ethos-U NPU driver"}

# Operator (as named in the flatbuffer) -> method of tflite::MicroMutableOpResolver that
# registers its kernel; from tensorflow/lite/micro/micro_mutable_op_resolver.h.
TFLM_ADD_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "ELU": "AddElu", "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt",
    "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    # Custom operators, by the name the converter (or Vela) writes into the model.
    "CUSTOM:ethos-u": "AddEthosU",
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
    "CUSTOM:SignalDelay": "AddDelay", "CUSTOM:SignalEnergy": "AddEnergy",
    "CUSTOM:SignalFftAutoScale": "AddFftAutoScale", "CUSTOM:SignalFilterBank": "AddFilterBank",
    "CUSTOM:SignalFilterBankLog": "AddFilterBankLog",
    "CUSTOM:SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "CUSTOM:SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "CUSTOM:SignalFramer": "AddFramer", "CUSTOM:SignalIrfft": "AddIrfft", "CUSTOM:SignalOverlapAdd": "AddOverlapAdd",
    "CUSTOM:SignalPCAN": "AddPCAN", "CUSTOM:SignalRfft": "AddRfft", "CUSTOM:SignalStacker": "AddStacker",
    "CUSTOM:SignalWindow": "AddWindow",
}


def resolver_methods(graph: Graph) -> list[tuple[str, str]]:
    """(operator, Add method) for each distinct operator of the model, sorted by operator name."""
    first_use: dict[str, int] = {}
    for op in graph.operators:
        first_use.setdefault(op.opcode, op.index)
    missing = [name for name in first_use if name not in TFLM_ADD_METHODS]
    if missing:
        listed = ", ".join(f"{name} (first at operator {first_use[name]})" for name in missing)
        raise McuforgeError(f"TFLM has no kernel registration for: {listed}",
                            where=graph.path,
                            fix="rebuild the model with operators TFLM supports: "
                                + ", ".join(sorted(TFLM_ADD_METHODS)))
    return [(name, TFLM_ADD_METHODS[name]) for name in sorted(first_use)]


def model_data_header(name: str, model_bytes: bytes, source_name: str, arena_bytes: int | None,
                      arena_source: str = "") -> str:
    guard = f"{name.upper()}_DATA_H_"
    arena = ""
    if arena_bytes is not None:
        arena = (f"/* Tensor arena for TFLM ({arena_source}).\n"
                 f"   Optimized kernels (CMSIS-NN, ESP-NN) may ask for scratch on top of it. */\n"
                 f"#define {name.upper()}_TFLM_ARENA_BYTES {arena_bytes}\n")
    return f"""/* Generated by mcuforge from {source_name}. Do not edit. */
#ifndef {guard}
#define {guard}

#define {name.upper()}_DATA_LEN {len(model_bytes)}
{arena}
#ifdef __cplusplus
extern "C" {{
#endif

/* The TFLite flatbuffer, {DATA_ALIGNMENT}-byte aligned: TFLM reads it in place. */
extern const unsigned char {name}_data[];
extern const unsigned int {name}_data_len;

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""


def model_data_source(name: str, model_bytes: bytes, source_name: str) -> str:
    return f"""// Generated by mcuforge from {source_name}. Do not edit.
#include "{name}_data.h"

alignas({DATA_ALIGNMENT}) const unsigned char {name}_data[] = {{
    {c_hex_bytes(model_bytes)}
}};
const unsigned int {name}_data_len = {len(model_bytes)};
"""


def op_resolver_header(name: str, methods: list[tuple[str, str]], op_counts: dict[str, int], source_name: str) -> str:
    guard = f"{name.upper()}_OP_RESOLVER_H_"
    used = ", ".join(f"{op} x{op_counts[op]}" for op, _ in methods)
    calls = "\n".join(f"  if ((status = resolver.{method}()) != kTfLiteOk) return status;  // {op}"
                      for op, method in methods)
    return f"""// Generated by mcuforge from {source_name}. Do not edit. C++ only, as TFLM is.
#ifndef {guard}
#define {guard}

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

// The operators of the model and no others, so that the linker drops every other kernel.
// Used: {used}
constexpr unsigned int {name}_op_count = {len(methods)};
using {name}_op_resolver_t = tflite::MicroMutableOpResolver<{name}_op_count>;

// Registers the model's operators; returns the first failure, if any.
inline TfLiteStatus {name}_register_ops({name}_op_resolver_t& resolver) {{
  TfLiteStatus status = kTfLiteOk;
{calls}
  return status;
}}

#endif  // {guard}
"""


def replace_files_atomically(out_dir: Path, files: dict[str, str | bytes]) -> None:
    """Write `files` into `out_dir`: all are written to a temp dir first, then moved in.

    A failure while writing leaves whatever `out_dir` held before untouched. Other files
    in `out_dir` are kept.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise McuforgeError(f"the output path exists and is not a directory: {out_dir}", where=str(out_dir),
                            fix="pass a directory (it is created if missing)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for filename, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            with open(staging / filename, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        try:
            staging.rename(out_dir)  # fresh output dir: one atomic move
            return
        except OSError:
            pass  # out_dir exists: move file by file, each move atomic
        out_dir.mkdir(exist_ok=True)
        for filename in files:
            os.replace(staging / filename, out_dir / filename)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def emit_tflm(model_path: str | Path, out_dir: str | Path, name: str = "model", arena_bytes: int | None = None) -> dict:
    """Write {name}_data.h/.cc, {name}_op_resolver.h and report.json into `out_dir`; return the report.

    The arena is measured with the TFLM interpreter unless `arena_bytes` is given, which only
    the Ethos-U path needs (the host cannot run the NPU op; Vela reports the arena instead).
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    ident = c_identifier(name)
    graph = load_tflite(model_path)
    if not graph.operators:
        raise McuforgeError("the model has no operators", where=str(model_path), fix="export the model again")
    methods = resolver_methods(graph)
    model_bytes = model_path.read_bytes()
    if arena_bytes is None:
        unrunnable = [op for op in graph.op_counts() if op in HOST_UNRUNNABLE_OPS]
        if unrunnable:
            raise McuforgeError(f"the TFLM arena of this model cannot be measured on the host: {unrunnable[0]} "
                                f"needs {HOST_UNRUNNABLE_OPS[unrunnable[0]]}",
                                where=str(model_path),
                                fix="emit it with the ethos-u engine, which takes the arena size from Vela's summary, "
                                    "or pass arena_bytes")
        arena_bytes = measure_tflm_arena(str(model_path))
        arena_source = "measured with the tflite-micro Python interpreter (reference kernels) on the host"
    else:
        if arena_bytes <= 0:
            raise McuforgeError(f"arena_bytes must be positive, got {arena_bytes}", where="arena_bytes",
                                fix="pass the arena size in bytes, or nothing to measure it")
        arena_source = "given by the caller"
    op_counts = graph.op_counts()
    files = {
        f"{ident}_data.h": model_data_header(ident, model_bytes, model_path.name, arena_bytes, arena_source),
        f"{ident}_data.cc": model_data_source(ident, model_bytes, model_path.name),
        f"{ident}_op_resolver.h": op_resolver_header(ident, methods, op_counts, model_path.name),
    }
    report = {
        "engine": ENGINE,
        "model": model_path.name,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "model_bytes": len(model_bytes),
        "arena_bytes": arena_bytes,
        "arena_source": arena_source,
        "ops": op_counts,
        **tflm_integration(graph, ident, methods, files),
    }
    files["report.json"] = json.dumps(report, indent=2) + "\n"
    replace_files_atomically(out_dir, files)
    return report


def tflm_integration(graph, ident: str, methods, files) -> dict:
    """The report fields a firmware needs to run a model through TFLM: the op resolver, the
    model's inputs and outputs, the C symbols written, and the files. Shared by the tflm and
    ethos-u engines, which both hand TFLM a flatbuffer array."""
    return {
        "op_resolver": {"type": f"tflite::MicroMutableOpResolver<{len(methods)}>", "op_count": len(methods),
                        "methods": [method for _, method in methods]},
        "input": [tensor_summary(graph, i) for i in graph.inputs],
        "output": [tensor_summary(graph, i) for i in graph.outputs],
        "symbols": {"data": f"{ident}_data", "data_len": f"{ident}_data_len",
                    "register_ops": f"{ident}_register_ops", "op_resolver_type": f"{ident}_op_resolver_t",
                    "arena_define": f"{ident.upper()}_TFLM_ARENA_BYTES"},
        "files": sorted([*files, "report.json"]),
    }
