"""Sliding-window geometry shared by convolutions and pooling (TFLM's padding rules)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import McuforgeError


def out_size(padding: str, image: int, filter_size: int, stride: int, dilation: int = 1) -> int:
    effective = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        return (image + stride - 1) // stride
    if padding == "VALID":
        return (image + stride - effective) // stride
    raise ValueError(padding)


def leading_padding(stride: int, dilation: int, image: int, filter_size: int, output: int) -> int:
    """Padding before the first row/column: TFLM puts the odd extra pixel after, not before."""
    effective = (filter_size - 1) * dilation + 1
    total = max(0, (output - 1) * stride + effective - image)
    return total // 2


@dataclass
class Window:
    batches: int
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_h: int
    pad_w: int

    def c_initializer(self) -> str:
        """A C designated initializer for mf_window."""
        return "{ " + ", ".join(f".{key} = {value}" for key, value in vars(self).items()) + " }"


def nhwc(shape, what: str, where: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise McuforgeError(f"{what} has shape {list(shape)}; a 4-D NHWC tensor was expected", where=where,
                            fix="export the model with NHWC tensors (TensorFlow's default layout)")
    return tuple(int(d) for d in shape)


def window(graph, op, filter_h: int, filter_w: int, where: str) -> Window:
    batches, in_h, in_w, in_c = nhwc(graph.tensor(op.inputs[0]).shape, "the input", where)
    out_b, out_h, out_w, out_c = nhwc(graph.tensor(op.outputs[0]).shape, "the output", where)
    opts = op.options
    padding = opts.get("padding", "VALID")
    stride_h, stride_w = opts.get("strideH", 1), opts.get("strideW", 1)
    dilation_h, dilation_w = opts.get("dilationHFactor", 1), opts.get("dilationWFactor", 1)
    if padding not in ("SAME", "VALID"):
        raise McuforgeError(f"padding {padding} is not supported", where=where, fix="use SAME or VALID padding")
    expected = (out_size(padding, in_h, filter_h, stride_h, dilation_h), out_size(padding, in_w, filter_w, stride_w, dilation_w))
    if (out_h, out_w) != expected or out_b != batches:
        raise McuforgeError(f"output shape {[out_b, out_h, out_w, out_c]} does not follow from the input, filter and "
                            f"{padding} padding (expected height x width {expected[0]} x {expected[1]})",
                            where=where, fix="the model file is inconsistent; export it again")
    return Window(batches, in_h, in_w, in_c, out_h, out_w, out_c, filter_h, filter_w, stride_h, stride_w,
                  dilation_h, dilation_w,
                  leading_padding(stride_h, dilation_h, in_h, filter_h, out_h),
                  leading_padding(stride_w, dilation_w, in_w, filter_w, out_w))
