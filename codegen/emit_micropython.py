"""Emit the MicroPython model file (`<name>.mfm`) that micropython_modules/mf_model.py runs.

The file is the whole model for the device-side int8 interpreter: the memory plan, one record
per operator with every requantization constant already computed (multipliers and shifts,
clamp bounds, the softmax exp table, the logistic table), then the constant tensors stored raw,
then an optional metadata block of typed key/value entries (e.g. the anomaly threshold that
codegen/anomaly_threshold.py calibrates), then the sha256 of everything before it. The device
does integer arithmetic only.

The layout is chosen for over-the-air deltas: nothing is compressed, sections come in a stable
order (operator order, then a fixed order within an operator), and no offset depends on a
value, so changing one weight changes that weight's byte and the 32-byte digest, nothing else.
docs/micropython-model-format.md specifies the format; FORMAT_VERSION changes with it.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from .analyze import analyze
from .aot_ops import OPERATORS
from .aot_ops.add import LEFT_SHIFT_INT8
from .aot_ops.elementwise_common import MAX_DIMS
from .aot_ops.pool_common import pool_window
from .aot_ops.window import window as conv_window
from .c_source import c_identifier
from .emit_aot import io_details, write_directory_atomically
from .errors import McuforgeError
from .plan import plan_memory
from .quantization import (activation_range, conv_multipliers, exp_on_negative_values, logistic_int8_table,
                           multiply_by_quantized_multiplier_greater_than_one, quantize_multiplier,
                           softmax_int8_params, SOFTMAX_SCALED_DIFF_INTEGER_BITS)
from .tflite_model import Graph

MAGIC = b"MFMD"
# Version 2 = version 1 + the metadata block (its size in the header's bytes 88..91, zero in a
# version-1 file). The device runtime reads every version up to its own.
FORMAT_VERSION = 2
HEADER_BYTES = 96
IO_ENTRY_BYTES = 44
MAX_IO_DIMS = 6
NAME_BYTES = 32
DIGEST_BYTES = 32
FILE_SUFFIX = ".mfm"

# Operator codes in the file are TFLite's builtin operator numbers.
OPCODES = {"ADD": 0, "AVERAGE_POOL_2D": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "LOGISTIC": 14,
           "MAX_POOL_2D": 17, "FULLY_CONNECTED": 9, "SOFTMAX": 25}
# Operators whose output is the input's bytes under another shape: they share one buffer in the
# plan and leave no record in the file.
VIEW_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
SUPPORTED_OPS = tuple(sorted(set(OPCODES) | {"RESHAPE"}))
# EXPAND_DIMS and SQUEEZE are how the TFLite converter writes Keras Conv1D / pooling 1D.
ACCEPTED_OPS = tuple(sorted(set(OPCODES) | set(VIEW_OPS)))

INT8_CODE, INT32_CODE = ord("b"), ord("i")

# Metadata: typed key/value entries, values as UTF-8 text (a float as its shortest decimal
# repr, which every MicroPython float size parses), keys sorted so that the block is stable.
METADATA_HEADER_BYTES = 4      # u16 entries, 2 zero
METADATA_ENTRY_BYTES = 4       # u8 key length, u8 type, u16 value length; then key, value
METADATA_MAX_BYTES = 4096      # a few key/values, not a data store: the device reads it in one piece
METADATA_KEY_MAX = 64
METADATA_TYPES = {"s": str, "i": int, "f": float}


class _Writer:
    """Collects the operator records and the constant sections, in order."""

    def __init__(self, graph: Graph, offsets: dict[int, int]):
        self.graph = graph
        self.offsets = offsets            # activation tensor index -> arena offset
        self.records: list[bytes] = []
        self.sections: list[bytes] = []
        self.constant_bytes = 0
        self.x_values = 1       # the interpreter's shared scratch: one int16 input row ...
        self.acc_values = 1     # ... and one int32 accumulator per output channel

    def scratch(self, x_values: int, acc_values: int) -> None:
        self.x_values = max(self.x_values, int(x_values))
        self.acc_values = max(self.acc_values, int(acc_values))

    @property
    def scratch_bytes(self) -> int:
        return 2 * self.x_values + 4 * self.acc_values

    def constant(self, values) -> int:
        values = np.ascontiguousarray(values)
        if values.dtype == np.int8:
            code, data = INT8_CODE, values.astype("<i1").tobytes()
        elif values.dtype == np.int32:
            code, data = INT32_CODE, values.astype("<i4").tobytes()
        else:
            raise TypeError(f"constant sections hold int8 or int32, not {values.dtype}")
        padding = (-len(data)) % 4
        self.sections.append(struct.pack("<IB3x", values.size, code) + data + b"\0" * padding)
        self.constant_bytes += len(data)
        return len(self.sections) - 1

    def ref(self, tensor_index: int) -> int:
        """An operand: its arena offset, or -(1 + section) when it is a constant tensor."""
        tensor = self.graph.tensors[tensor_index]
        if tensor.is_constant:
            return -1 - self.constant(tensor.data.reshape(-1))
        return self.offsets[tensor_index]

    def record(self, opcode: str, params: list[int], first_section: int) -> None:
        for value in params:
            if not -(1 << 31) <= int(value) < (1 << 31):
                raise ValueError(f"{opcode} parameter {value} does not fit in int32")
        count = len(self.sections) - first_section
        self.records.append(struct.pack("<BxHHH", OPCODES[opcode], len(params), first_section, count)
                            + struct.pack(f"<{len(params)}i", *[int(v) for v in params]))


def _window_params(win) -> list[int]:
    return [win.batches, win.in_h, win.in_w, win.in_c, win.out_h, win.out_w, win.out_c, win.filter_h, win.filter_w,
            win.stride_h, win.stride_w, win.dilation_h, win.dilation_w, win.pad_h, win.pad_w]


def _clamp(graph, op) -> list[int]:
    out = graph.tensor(op.outputs[0])
    return list(activation_range(op.options.get("activation", "NONE"), out.scale[0], out.zero_point[0]))


def _requant_sections(w: _Writer, graph, op, channels: int, weights: np.ndarray) -> None:
    """Weights, bias (zeros when absent), then one multiplier and one shift per output channel."""
    input_t, filt, output = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
    bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    scales = filt.scale if filt.per_channel else np.repeat(filt.scale, channels)
    multipliers, shifts = conv_multipliers(input_t.scale[0], scales, output.scale[0])
    w.constant(weights.astype(np.int8).reshape(-1))
    w.constant(bias.data.astype(np.int32).reshape(-1) if bias is not None else np.zeros(channels, np.int32))
    w.constant(multipliers.astype(np.int32))
    w.constant(shifts.astype(np.int32))


def _fully_connected(w: _Writer, graph, op) -> None:
    input_t, weights, output = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
    output_depth, accum_depth = weights.shape[-2], weights.shape[-1]
    batches = int(np.prod(output.shape, dtype=np.int64)) // output_depth
    params = [w.ref(op.inputs[0]), w.ref(op.outputs[0]), batches, accum_depth, output_depth,
              -int(input_t.zero_point[0]), -int(weights.zero_point[0]) if not weights.per_channel else 0,
              int(output.zero_point[0]), *_clamp(graph, op)]
    first = len(w.sections)
    _requant_sections(w, graph, op, output_depth, weights.data)
    w.record("FULLY_CONNECTED", params, first)
    w.scratch(accum_depth, output_depth)


def _conv(w: _Writer, graph, op) -> None:
    filt = graph.tensor(op.inputs[1])
    out_c, filter_h, filter_w, filter_in_c = filt.shape
    win = conv_window(graph, op, filter_h, filter_w, f"{graph.path}: operator {op.index} (CONV_2D)")
    input_t, output = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    params = [w.ref(op.inputs[0]), w.ref(op.outputs[0]), *_window_params(win), filter_in_c,
              -int(input_t.zero_point[0]), int(output.zero_point[0]), *_clamp(graph, op)]
    first = len(w.sections)
    _requant_sections(w, graph, op, win.out_c, filt.data)
    w.record("CONV_2D", params, first)
    w.scratch(filter_h * filter_w * filter_in_c, win.out_c)


def _depthwise(w: _Writer, graph, op) -> None:
    filt = graph.tensor(op.inputs[1])
    _, filter_h, filter_w, _ = filt.shape
    win = conv_window(graph, op, filter_h, filter_w, f"{graph.path}: operator {op.index} (DEPTHWISE_CONV_2D)")
    input_t, output = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    params = [w.ref(op.inputs[0]), w.ref(op.outputs[0]), *_window_params(win), win.out_c // win.in_c,
              -int(input_t.zero_point[0]), int(output.zero_point[0]), *_clamp(graph, op)]
    first = len(w.sections)
    _requant_sections(w, graph, op, win.out_c, filt.data)
    w.record("DEPTHWISE_CONV_2D", params, first)
    w.scratch(1, win.out_c)


def _pool(w: _Writer, graph, op) -> None:
    params = [w.ref(op.inputs[0]), w.ref(op.outputs[0]), *_window_params(pool_window(graph, op)), *_clamp(graph, op)]
    w.record(op.opcode, params, len(w.sections))


def _broadcast(shape1, shape2, out_shape) -> list[int]:
    """count, ndim, then the output shape and each input's stride per output dimension (0 where
    that input is broadcast), each padded to MAX_DIMS."""
    ndim = max(len(out_shape), 1)
    out = [1] * (ndim - len(out_shape)) + list(out_shape)
    strides = []
    for shape in (shape1, shape2):
        padded = [1] * (ndim - len(shape)) + list(shape)
        contiguous = [int(np.prod(padded[d + 1:], dtype=np.int64)) for d in range(ndim)]
        strides.append([0 if padded[d] == 1 and out[d] != 1 else contiguous[d] for d in range(ndim)])
    pad = lambda values: list(values) + [0] * (MAX_DIMS - len(values))  # noqa: E731
    return [int(np.prod(out, dtype=np.int64)), ndim, *pad(out), *pad(strides[0]), *pad(strides[1])]


def _add(w: _Writer, graph, op) -> None:
    in1, in2, out = (graph.tensor(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    s1, s2, so = (float(np.float32(t.scale[0])) for t in (in1, in2, out))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << LEFT_SHIFT_INT8) * so))
    first = len(w.sections)
    refs = [w.ref(op.inputs[0]), w.ref(op.inputs[1]), w.ref(op.outputs[0])]
    params = [*refs, *_broadcast(in1.shape, in2.shape, out.shape),
              -int(in1.zero_point[0]), -int(in2.zero_point[0]), int(out.zero_point[0]), LEFT_SHIFT_INT8,
              m1, sh1, m2, sh2, mo, sho, *_clamp(graph, op)]
    w.record("ADD", params, first)


def softmax_exp_table(beta: float, input_scale: float) -> np.ndarray:
    """Entry d: TFLM's Q0.31 exp() term for an input d below its row's maximum (0 where TFLM drops
    the term, below diff_min: the sum and the output come out the same either way)."""
    fixed = softmax_int8_params(beta, input_scale)
    table = np.zeros(256, dtype=np.int32)
    for d in range(256):
        if -d >= fixed["diff_min"]:
            scaled = multiply_by_quantized_multiplier_greater_than_one(-d, fixed["input_multiplier"],
                                                                        fixed["input_left_shift"])
            table[d] = exp_on_negative_values(scaled, SOFTMAX_SCALED_DIFF_INTEGER_BITS)
    return table


def _softmax(w: _Writer, graph, op) -> None:
    source = graph.tensor(op.inputs[0])
    depth = int(source.shape[-1])
    rows = int(np.prod(source.shape[:-1], dtype=np.int64))
    params = [w.ref(op.inputs[0]), w.ref(op.outputs[0]), rows, depth]
    first = len(w.sections)
    w.constant(softmax_exp_table(op.options["beta"], float(source.scale[0])))
    w.record("SOFTMAX", params, first)


def _logistic(w: _Writer, graph, op) -> None:
    source = graph.tensor(op.inputs[0])
    params = [w.ref(op.inputs[0]), w.ref(op.outputs[0]), int(np.prod(source.shape, dtype=np.int64))]
    first = len(w.sections)
    w.constant(logistic_int8_table(float(source.scale[0]), int(source.zero_point[0])))
    w.record("LOGISTIC", params, first)


_RECORD_WRITERS = {"FULLY_CONNECTED": _fully_connected, "CONV_2D": _conv, "DEPTHWISE_CONV_2D": _depthwise,
                   "AVERAGE_POOL_2D": _pool, "MAX_POOL_2D": _pool, "ADD": _add, "SOFTMAX": _softmax,
                   "LOGISTIC": _logistic}


def check_supported(graph: Graph) -> None:
    """Raise McuforgeError naming the first unsupported operator, its node and the supported set."""
    unsupported: dict[str, int] = {}
    for op in graph.operators:
        if op.opcode not in ACCEPTED_OPS:
            unsupported.setdefault(op.opcode, op.index)
    if unsupported:
        (opcode, index), *others = unsupported.items()
        also = f"; the model also uses unsupported {', '.join(f'{n} (first at node {i})' for n, i in others)}" \
            if others else ""
        raise McuforgeError(f"unsupported operator {opcode} at node {index}{also}",
                            where=f"{graph.path}: operator {index} ({opcode})",
                            fix=f"the micropython engine supports: {', '.join(SUPPORTED_OPS)} (and the "
                                f"EXPAND_DIMS/SQUEEZE views of 1-D layers); use --engine aot or tflm for this model")
    for op in graph.operators:
        try:
            OPERATORS[op.opcode].check(graph, op)   # the AOT operator modules' checks: same kernels' semantics
        except McuforgeError as exc:
            engine = lambda text: text.replace("the aot engine", "the micropython engine") if text else text  # noqa: E731
            raise McuforgeError(engine(exc.what), where=exc.where, fix=engine(exc.fix)) from None
    for t in list(graph.inputs) + list(graph.outputs):
        tensor = graph.tensors[t]
        which = "input" if t in graph.inputs else "output"
        if tensor.dtype != "INT8" or tensor.scale is None or len(tensor.scale) != 1:
            raise McuforgeError(f"model {which} {tensor.name!r} is {tensor.dtype}; the micropython engine reads and "
                                f"writes int8 tensors with one scale and zero point",
                                where=f"{graph.path}: tensor {t}",
                                fix="convert with int8 input and output (`mcuforge convert` does)")
        if len(tensor.shape) > MAX_IO_DIMS:
            raise McuforgeError(f"model {which} {tensor.name!r} has {len(tensor.shape)} dimensions",
                                where=f"{graph.path}: tensor {t}", fix=f"use at most {MAX_IO_DIMS} dimensions")


def _metadata_value(key: str, value) -> tuple[str, str]:
    """(type code, text) of one metadata value."""
    if isinstance(value, (bool, np.bool_)):
        raise McuforgeError(f"metadata {key!r} is a bool", where=f"metadata: {key}",
                            fix="store 0/1 (int) or a string instead")
    if isinstance(value, (int, np.integer)):
        return "i", str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise McuforgeError(f"metadata {key!r} is {value}", where=f"metadata: {key}", fix="store a finite number")
        return "f", repr(value)
    if isinstance(value, str):
        return "s", value
    raise McuforgeError(f"metadata {key!r} is a {type(value).__name__}; entries hold an int, a float or a str",
                        where=f"metadata: {key}", fix="convert the value to int, float or str")


def _valid_key(key) -> bool:
    return (isinstance(key, str) and 0 < len(key) <= METADATA_KEY_MAX and "a" <= key[0] <= "z"
            and all("a" <= c <= "z" or "0" <= c <= "9" or c == "_" for c in key))


def encode_metadata(metadata: dict | None) -> bytes:
    """The metadata block (empty bytes for no metadata): u16 entry count, 2 zero bytes, then per
    entry in key order u8 key length, u8 type ('s', 'i', 'f'), u16 value length, the key (ASCII)
    and the value (UTF-8 text), zero-padded to a multiple of 4 bytes."""
    if not metadata:
        return b""
    for key in metadata:
        if not _valid_key(key):
            raise McuforgeError(f"metadata key {key!r} is not a lower-case identifier of 1 to {METADATA_KEY_MAX} "
                                f"ASCII characters", where=f"metadata: {key!r}",
                                fix="use keys like anomaly_threshold: a-z, 0-9 and _, starting with a letter")
    entries = []
    for key in sorted(metadata):
        code, text = _metadata_value(key, metadata[key])
        value = text.encode()
        if len(value) > 0xFFFF:
            raise McuforgeError(f"metadata {key!r} is {len(value)} bytes long", where=f"metadata: {key}",
                                fix="keep values short: the block is read in one piece on the device")
        entries.append(struct.pack("<BBH", len(key), ord(code), len(value)) + key.encode() + value)
    block = struct.pack("<H2x", len(entries)) + b"".join(entries)
    block += b"\0" * ((-len(block)) % 4)
    if len(block) > METADATA_MAX_BYTES:
        raise McuforgeError(f"the metadata block is {len(block)} bytes, more than the {METADATA_MAX_BYTES} a "
                            f"model file may carry", where="metadata",
                            fix="store fewer or shorter entries (a threshold and its settings, not data)")
    return block


def decode_metadata(block: bytes) -> dict:
    """The inverse of encode_metadata (the host-side reader; mf_model.py has the device's)."""
    if not block:
        return {}
    (count,) = struct.unpack_from("<H", block, 0)
    at, out = METADATA_HEADER_BYTES, {}
    for _ in range(count):
        key_len, code, value_len = struct.unpack_from("<BBH", block, at)
        at += METADATA_ENTRY_BYTES
        key = block[at:at + key_len].decode("ascii")
        text = block[at + key_len:at + key_len + value_len]
        at += key_len + value_len
        kind = METADATA_TYPES.get(chr(code))
        out[key] = kind(text.decode()) if kind else bytes(text)
    return out


def read_metadata(content: bytes) -> dict:
    """The metadata of a model file's bytes (version 1 files have none)."""
    version = struct.unpack_from("<H", content, 4)[0]
    if version < 2:
        return {}
    (size,) = struct.unpack_from("<I", content, 88)
    end = len(content) - DIGEST_BYTES
    return decode_metadata(content[end - size:end])


def _io_entry(graph: Graph, t: int, offset: int) -> bytes:
    tensor = graph.tensors[t]
    dims = list(tensor.shape) + [0] * (MAX_IO_DIMS - len(tensor.shape))
    return struct.pack(f"<IIfiBBxx{MAX_IO_DIMS}I", offset, tensor.nbytes, float(tensor.scale[0]),
                       int(tensor.zero_point[0]), len(tensor.shape), INT8_CODE, *dims)


def render_model_file(graph: Graph, name: str = "model", source_bytes: bytes | None = None,
                      metadata: dict | None = None) -> tuple[bytes, dict]:
    """The model file's bytes and the report, without touching the disk. `metadata`: key/values
    (int, float, str) that the device sees as `Model.metadata`, e.g. {"anomaly_threshold": 0.8}."""
    name = c_identifier(name)
    metadata_block = encode_metadata(metadata)
    encoded_name = name.encode()
    if len(encoded_name) > NAME_BYTES:
        raise McuforgeError(f"model name {name!r} is longer than {NAME_BYTES} bytes", where="--name",
                            fix="choose a shorter name")
    check_supported(graph)
    analysis = analyze(graph, in_place=False)   # the interpreter's kernels never overwrite an input
    plan = plan_memory(analysis)
    offsets = {t: plan.offsets[b] for t, b in analysis.buffer_of.items()}

    writer = _Writer(graph, offsets)
    for op in graph.operators:
        if op.opcode not in VIEW_OPS:
            _RECORD_WRITERS[op.opcode](writer, graph, op)

    source_digest = hashlib.sha256(source_bytes).digest() if source_bytes is not None else bytes(DIGEST_BYTES)
    io_table = b"".join(_io_entry(graph, t, offsets[t]) for t in list(graph.inputs) + list(graph.outputs))
    body = io_table + b"".join(writer.records) + b"".join(writer.sections) + metadata_block
    file_bytes = HEADER_BYTES + len(body) + DIGEST_BYTES
    header = struct.pack("<4sHHIIHHBBxx32s32sI4x", MAGIC, FORMAT_VERSION, HEADER_BYTES, file_bytes,
                         max(plan.arena_bytes, 1), len(writer.records), len(writer.sections),
                         len(graph.inputs), len(graph.outputs), source_digest, encoded_name,
                         len(metadata_block))
    assert len(header) == HEADER_BYTES
    content = header + body
    digest = hashlib.sha256(content).digest()
    content += digest
    assert len(content) == file_bytes

    report = {
        "engine": "micropython",
        "name": name,
        "model": {"path": str(graph.path), "sha256": source_digest.hex() if source_bytes is not None else ""},
        "file": {"name": name + FILE_SUFFIX, "bytes": len(content), "sha256": digest.hex(),
                 "format": MAGIC.decode(), "format_version": FORMAT_VERSION},
        "ops": analysis.op_counts,
        "records": len(writer.records),
        "arena_bytes": plan.arena_bytes,
        "arena_strategy": plan.strategy,
        "peak_live_bytes": plan.peak_live_bytes,
        "largest_live_set_bytes": analysis.live_bound,
        "weights_bytes": writer.constant_bytes,
        "scratch_bytes": writer.scratch_bytes,
        # What mf_model.load() keeps in the device's heap for this model: every constant section,
        # the arena and the scratch rows (plus some hundreds of bytes of Python objects).
        "load_ram_bytes": writer.constant_bytes + plan.arena_bytes + writer.scratch_bytes,
        "macs": analysis.total_macs,
        "input": io_details(graph, graph.inputs),
        "output": io_details(graph, graph.outputs),
        "metadata": decode_metadata(metadata_block),   # as the device will read it
        "metadata_bytes": len(metadata_block),
    }
    return content, report


def emit_micropython(graph: Graph, out_dir: str | Path, name: str = "model", metadata: dict | None = None) -> dict:
    """Write `<name>.mfm` and report.json into out_dir (atomically: a failure leaves the old
    directory intact); return the report. `metadata`: see render_model_file."""
    source_bytes = Path(graph.path).read_bytes() if Path(graph.path).is_file() else None
    content, report = render_model_file(graph, name, source_bytes, metadata)
    files = {report["file"]["name"]: content, "report.json": json.dumps(report, indent=2) + "\n"}
    write_directory_atomically(Path(out_dir), files)
    return report
