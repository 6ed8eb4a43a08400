"""Make test models from published ones by editing their flatbuffer (tflite-micro's schema)."""
import flatbuffers
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema


def with_operator_replaced(raw: bytes, op_index: int, new_opcode: str) -> bytes:
    """The same model with operator `op_index` turned into builtin `new_opcode` (a name such as 'HARD_SWISH')."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(raw, 0))
    code = schema.OperatorCodeT()
    value = getattr(schema.BuiltinOperator, new_opcode)
    code.builtinCode = value
    code.deprecatedBuiltinCode = min(value, 127)
    code.version = 1
    model.operatorCodes.append(code)
    operator = model.subgraphs[0].operators[op_index]
    operator.opcodeIndex = len(model.operatorCodes) - 1
    operator.builtinOptionsType = 0
    operator.builtinOptions = None
    builder = flatbuffers.Builder(len(raw) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
