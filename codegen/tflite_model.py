"""Read a .tflite flatbuffer into mcuforge's graph representation.

The flatbuffer is parsed with the schema module that ships with tflite-micro (the reference
we check against), so mcuforge and TFLM read exactly the same fields. Everything after this
stage works on `Graph`, never on the flatbuffer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from .errors import McuforgeError

TFLITE_FILE_IDENTIFIER = b"TFL3"

_NAMES = lambda enum_cls: {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}  # noqa: E731
BUILTIN_OP_NAMES = _NAMES(schema.BuiltinOperator)
TENSOR_TYPE_NAMES = _NAMES(schema.TensorType)
ACTIVATION_NAMES = _NAMES(schema.ActivationFunctionType)
PADDING_NAMES = _NAMES(schema.Padding)

NUMPY_DTYPES = {
    "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FLOAT32": np.float32, "FLOAT16": np.float16, "BOOL": np.bool_,
}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str                      # TFLite type name: "INT8", "INT32", "FLOAT32", ...
    scale: np.ndarray | None        # float32 per tensor (len 1) or per channel
    zero_point: np.ndarray | None   # int64, same length as scale
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant contents, shaped; None for activations

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and len(self.scale) > 1

    def quant_summary(self) -> dict:
        if self.scale is None:
            return {"scale": None, "zero_point": None}
        if self.per_channel:
            return {"scale": [float(s) for s in self.scale], "zero_point": [int(z) for z in self.zero_point]}
        return {"scale": float(self.scale[0]), "zero_point": int(self.zero_point[0])}


@dataclass
class Operator:
    index: int
    opcode: str                     # e.g. "FULLY_CONNECTED", or "CUSTOM:ethos-u"
    inputs: list[int]               # tensor indices; -1 marks an omitted optional input
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    path: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def tensor(self, index: int) -> Tensor | None:
        return None if index < 0 else self.tensors[index]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.opcode] = counts.get(op.opcode, 0) + 1
        return counts


def _opcode_name(code: "schema.OperatorCodeT") -> str:
    # Models written before builtin codes exceeded 127 keep the code in the deprecated field.
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = BUILTIN_OP_NAMES.get(value, f"BUILTIN_{value}")
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return name


def _options(op: "schema.OperatorT") -> dict:
    if op.builtinOptions is None:
        return {}
    options = {}
    for key, value in vars(op.builtinOptions).items():
        if key == "fusedActivationFunction":
            options["activation"] = ACTIVATION_NAMES.get(value, str(value))
        elif key == "padding":
            options["padding"] = PADDING_NAMES.get(value, str(value))
        elif isinstance(value, (int, float, bool, str)) or value is None:
            options[key] = value
        elif isinstance(value, np.ndarray):
            options[key] = value.tolist()
        elif isinstance(value, list):
            options[key] = list(value)
    return options


def _buffer_bytes(model: "schema.ModelT", buffer_index: int, raw: bytes) -> bytes | None:
    buffer = model.buffers[buffer_index] if 0 <= buffer_index < len(model.buffers) else None
    if buffer is None:
        return None
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, dtype=np.uint8).tobytes()
    # Models over 2 GB keep buffers outside the flatbuffer, addressed by offset and size.
    if getattr(buffer, "offset", 0) and getattr(buffer, "size", 0):
        return raw[buffer.offset: buffer.offset + buffer.size]
    return None


def _tensor(model, index: int, t: "schema.TensorT", raw: bytes, path: str) -> Tensor:
    dtype = TENSOR_TYPE_NAMES.get(t.type, f"TYPE_{t.type}")
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    scale = zero_point = None
    qdim = 0
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, dtype=np.float32)
        zero_point = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(scale)), dtype=np.int64)
        qdim = int(q.quantizedDimension)
    data = None
    contents = _buffer_bytes(model, t.buffer, raw)
    if contents is not None:
        if dtype not in NUMPY_DTYPES:
            raise McuforgeError(f"constant tensor {index} has unsupported type {dtype}", where=f"{path}: tensor {index}",
                                fix="quantize the model to int8 (mcuforge convert)")
        np_dtype = np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<")
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if len(contents) != expected:
            raise McuforgeError(f"tensor {index} ({t.name.decode(errors='replace') if t.name else ''}) holds "
                                f"{len(contents)} bytes but its shape {list(shape)} needs {expected}",
                                where=f"{path}: tensor {index}", fix="the model file is damaged; export it again")
        data = np.frombuffer(contents, dtype=np_dtype).astype(np_dtype.newbyteorder("=")).reshape(shape)
    name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else (t.name or "")
    return Tensor(index, name, shape, dtype, scale, zero_point, qdim, data)


def parse_tflite(raw: bytes, path: str = "<bytes>") -> Graph:
    """Parse flatbuffer bytes into a Graph (first subgraph)."""
    if len(raw) < 8 or raw[4:8] != TFLITE_FILE_IDENTIFIER:
        raise McuforgeError(f"not a TensorFlow Lite model: the file does not carry the 'TFL3' identifier",
                            where=path, fix="pass a .tflite file (or convert a Keras model with `mcuforge convert`)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(raw, 0))
        subgraph = model.subgraphs[0]
        tensors = [_tensor(model, i, t, raw, path) for i, t in enumerate(subgraph.tensors or [])]
        codes = [_opcode_name(c) for c in model.operatorCodes]
        operators = [
            Operator(i, codes[op.opcodeIndex],
                     [int(x) for x in (op.inputs if op.inputs is not None else [])],
                     [int(x) for x in (op.outputs if op.outputs is not None else [])],
                     _options(op))
            for i, op in enumerate(subgraph.operators or [])
        ]
        inputs = [int(x) for x in subgraph.inputs]
        outputs = [int(x) for x in subgraph.outputs]
    except McuforgeError:
        raise
    except Exception as exc:  # the flatbuffers runtime raises assorted errors on damaged input
        raise McuforgeError(f"the model file is truncated or damaged ({type(exc).__name__}: {exc})",
                            where=f"{path} ({len(raw)} bytes)",
                            fix="export or download the model again; check that the copy is complete") from None
    description = model.description.decode(errors="replace") if isinstance(model.description, bytes) else (model.description or "")
    return Graph(path, tensors, operators, inputs, outputs, description)


def load_tflite(path: str | Path) -> Graph:
    path = Path(path)
    if not path.exists():
        raise McuforgeError(f"model file not found: {path}", fix="check the path")
    if path.is_dir():
        raise McuforgeError(f"expected a .tflite file but got a directory: {path}",
                            fix="convert a SavedModel directory first with `mcuforge convert`")
    return parse_tflite(path.read_bytes(), str(path))
