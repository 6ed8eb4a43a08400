# Int8 kernels of the MicroPython interpreter, bit-exact with TFLM's reference kernels.
#
# The arithmetic follows mcuforge's AOT C kernels (codegen/kernels/portable/), which match TFLM:
# int32 accumulation, the double-rounding MultiplyByQuantizedMultiplier, clamping to the fused
# activation's range. Every constant that TFLM computes with floats at Prepare time (multipliers,
# shifts, clamp bounds, the softmax exp table, the logistic table) comes precomputed in the model
# file, so this module does integer arithmetic only.
#
# The inner loops (gather, fill, copy, dot_rows, depthwise_tap, requantize) exist in three
# flavours, picked per loop at import time:
#   viper  - machine-word code, where the port has the native emitter;
#   native - the plain loops compiled to machine code (@micropython.native);
#   python - the plain loops as bytecode (the WebAssembly port, or any port without the emitter).
# The fast flavours are compiled from strings with exec() inside try/except: on a port without
# the emitter their decorators are a SyntaxError, which must not escape (and this file must stay
# compilable by a plain mpy-cross). Each fast loop is then checked against the plain one on
# edge-case data before it is used, so a fast loop that misbehaves on some port is never used.
import array

INT32_MIN = -0x80000000
INT32_MAX = 0x7FFFFFFF


# -- fixed-point helpers (gemmlowp semantics, exact on Python integers) -------------------------

def wrap32(x):
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: (a * b) / 2^31, rounded, ties away from zero."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    p = a * b
    if p >= 0:
        return (p + 0x40000000) >> 31
    return -((0x3FFFFFFF - p) >> 31)


def rdbp(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent, rounded to nearest, ties away from zero."""
    if exponent <= 0:
        return x
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier (TFLM's double-rounding version)."""
    if shift > 0:
        x = wrap32(x << shift)
        shift = 0
    p = x * multiplier
    if p >= 0:
        p = (p + 0x40000000) >> 31
    else:
        p = -((0x3FFFFFFF - p) >> 31)
    if shift < 0:
        e = -shift
        mask = (1 << e) - 1
        threshold = (mask >> 1) + (1 if p < 0 else 0)
        p = (p >> e) + (1 if (p & mask) > threshold else 0)
    return p


def _saturating_double(x, exponent):
    # SaturatingRoundingMultiplyByPOT for a positive exponent.
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def one_over_one_plus_x(a):
    """1 / (1 + a) for a Q0.31 value a in [0, 1), as Q0.31 (three Newton-Raphson steps)."""
    total = a + INT32_MAX
    half = (total + 1) >> 1  # rounding half sum; the total is positive here
    x = wrap32(1515870810 + srdhm(half, -1010580540))   # 48/17 - 32/17 * d, Q2.29
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half, x))
        x = wrap32(x + _saturating_double(srdhm(x, one_minus), 2))
    return _saturating_double(x, 1)


def count_leading_zeros32(x):
    n = 0
    while x < 0x80000000:
        x <<= 1
        n += 1
    return n


# -- the inner loops ------------------------------------------------------------------------------

# Plain source of the inner loops; "#@FAST" becomes "@micropython.native" for the native flavour.
# x buffers are array('h') (an int8 plus its zero-point offset fits in 16 bits), accumulators,
# bias, multipliers and shifts array('i'), weights and activations signed int8 memoryviews.
PLAIN_LOOPS = """
#@FAST
def gather(src, src_base, n, offset, dst, dst_base):
    for i in range(n):
        dst[dst_base + i] = src[src_base + i] + offset

#@FAST
def fill(dst, base, n, value):
    for i in range(base, base + n):
        dst[i] = value

#@FAST
def copy(src, dst, n):
    for i in range(n):
        dst[i] = src[i]

#@FAST
def dot_rows(w, w_base, row_len, rows, x, bias, acc, acc_base):
    for r in range(acc_base, acc_base + rows):
        s = bias[r]
        i = 0
        for v in w[w_base:w_base + row_len]:
            s += v * x[i]
            i += 1
        acc[r] = s
        w_base += row_len

#@FAST
def depthwise_tap(f, f_base, src, src_base, channels, multiplier, offset, acc):
    if multiplier == 1:
        for c in range(channels):
            acc[c] += f[f_base + c] * (src[src_base + c] + offset)
        return
    oc = 0
    for c in range(channels):
        v = src[src_base + c] + offset
        for _ in range(multiplier):
            acc[oc] += f[f_base + oc] * v
            oc += 1

#@FAST
def requantize(acc, n, multiplier, shift, out, out_base, out_offset, act_min, act_max):
    for i in range(n):
        v = mbqm(acc[i], multiplier[i], shift[i]) + out_offset
        out[out_base + i] = act_min if v < act_min else (act_max if v > act_max else v)
"""

# Viper versions. Loads through ptr8/ptr16/ptr32 are unsigned (and ptr32 loads are zero-extended
# on 64-bit ports), so values are sign-extended by hand: (v ^ top) - top is the identity on a
# 32-bit word and a sign extension of a zero-extended 32-bit value on a 64-bit one. `top` is
# computed at run time (1 << 31 written as a literal would be folded into a long-int constant).
# requantize() here handles right shifts only (shift <= 0); the interpreter uses the plain one
# for the rare layer with a left shift.
VIPER_LOOPS = """
@micropython.viper
def gather(src: ptr8, src_base: int, n: int, offset: int, dst: ptr16, dst_base: int):
    i = 0
    while i < n:
        dst[dst_base + i] = ((int(src[src_base + i]) ^ 0x80) - 0x80) + offset
        i += 1

@micropython.viper
def fill(dst: ptr16, base: int, n: int, value: int):
    i = base
    end = base + n
    while i < end:
        dst[i] = value
        i += 1

@micropython.viper
def copy(src: ptr32, dst: ptr32, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1

@micropython.viper
def dot_rows(w: ptr8, w_base: int, row_len: int, rows: int, x: ptr16, bias: ptr32, acc: ptr32, acc_base: int):
    one = 1
    top = one << 31
    r = acc_base
    r_end = acc_base + rows
    while r < r_end:
        s = (int(bias[r]) ^ top) - top
        j = w_base
        end = w_base + row_len
        i = 0
        while j < end:
            s += ((int(w[j]) ^ 0x80) - 0x80) * ((int(x[i]) ^ 0x8000) - 0x8000)
            j += 1
            i += 1
        acc[r] = s
        w_base = end
        r += 1

@micropython.viper
def depthwise_tap(f: ptr8, f_base: int, src: ptr8, src_base: int, channels: int, multiplier: int, offset: int, acc: ptr32):
    one = 1
    top = one << 31
    oc = 0
    c = 0
    while c < channels:
        v = ((int(src[src_base + c]) ^ 0x80) - 0x80) + offset
        m = 0
        while m < multiplier:
            a = (int(acc[oc]) ^ top) - top
            acc[oc] = a + ((int(f[f_base + oc]) ^ 0x80) - 0x80) * v
            oc += 1
            m += 1
        c += 1

@micropython.viper
def requantize(acc: ptr32, n: int, multiplier: ptr32, shift: ptr32, out: ptr8, out_base: int, out_offset: int, act_min: int, act_max: int):
    one = 1
    top = one << 31
    i = 0
    while i < n:
        x = (int(acc[i]) ^ top) - top
        e = 0 - ((int(shift[i]) ^ top) - top)
        um = uint(multiplier[i])
        # |x| * multiplier as four 16-bit limbs, every partial sum below 2^32
        if x < 0:
            ux = uint(0) - uint(x)
            nudge_lo = 0xFFFF
            nudge_hi = 0x3FFF
        else:
            ux = uint(x)
            nudge_lo = 0
            nudge_hi = 0x4000
        a1 = ux >> 16
        a0 = ux & 0xFFFF
        b1 = um >> 16
        b0 = um & 0xFFFF
        lo = a0 * b0
        mid = a1 * b0 + a0 * b1
        hi = a1 * b1
        t0 = (lo & 0xFFFF) + uint(nudge_lo)
        t1 = (lo >> 16) + (mid & 0xFFFF) + uint(nudge_hi) + (t0 >> 16)
        t2 = (hi & 0xFFFF) + (mid >> 16) + (t1 >> 16)
        t3 = (hi >> 16) + (t2 >> 16)
        q = int((t3 << 17) + ((t2 & 0xFFFF) << 1) + ((t1 & 0xFFFF) >> 15))
        if x < 0:
            q = 0 - q
        if e > 0:
            mask = (one << e) - 1
            threshold = mask >> 1
            if q < 0:
                threshold += 1
            rem = q & mask
            q = q >> e
            if rem > threshold:
                q += 1
        q += out_offset
        if q < act_min:
            q = act_min
        if q > act_max:
            q = act_max
        out[out_base + i] = q
        i += 1
"""

LOOP_NAMES = ("gather", "fill", "copy", "dot_rows", "depthwise_tap", "requantize")


def _compile(source, decorator):
    namespace = {"mbqm": mbqm}
    if decorator:
        source = source.replace("#@FAST", decorator)
    try:
        exec(source, namespace)
    except Exception:   # SyntaxError where the port has no native emitter, ViperTypeError, MemoryError
        return {}
    return namespace


# -- the self-check of a fast loop against the plain one -------------------------------------------

def _lcg_values(count, seed, low, high):
    values = []
    state = seed
    span = high - low + 1
    for _ in range(count):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        values.append(low + (state >> 8) % span)
    return values


def _run_check(loops, name):
    """Run loop `name` of `loops` on fixed edge-case data; return what it produced."""
    i8 = lambda values: memoryview(array.array("b", values))  # noqa: E731
    if name == "gather":
        dst = array.array("h", [7] * 12)
        loops["gather"](i8([-128, 127, 0, -1, 1, 100, -100, 5]), 1, 6, 128, dst, 3)
        loops["gather"](i8([-128, 127, 3]), 0, 3, -127, dst, 9)
        return list(dst)
    if name == "fill":
        dst = array.array("h", [5] * 9)
        loops["fill"](dst, 2, 5, 0)
        loops["fill"](dst, 8, 1, -3)
        return list(dst)
    if name == "copy":
        dst = array.array("i", [0] * 5)
        loops["copy"](array.array("i", [INT32_MIN, -1, 0, INT32_MAX, 12345]), dst, 5)
        return list(dst)
    if name == "dot_rows":
        w = i8([-128, 127] + _lcg_values(46, 3, -128, 127))
        x = array.array("h", [-256, 255] + _lcg_values(10, 5, -256, 255))
        bias = array.array("i", [-70000, 3, 2 ** 30, -(2 ** 30), 0, 1])
        acc = array.array("i", [9] * 6)
        loops["dot_rows"](w, 0, 12, 4, x, bias, acc, 1)
        loops["dot_rows"](w, 40, 8, 1, x, bias, acc, 0)
        return list(acc)
    if name == "depthwise_tap":
        f = i8(_lcg_values(24, 7, -128, 127))
        src = i8([-128, 127, -1, 0, 64, -64])
        one = array.array("i", [-5, 100000, INT32_MIN // 2, 0, 1, -1])
        three = array.array("i", [0] * 12)
        loops["depthwise_tap"](f, 2, src, 0, 6, 1, 128, one)
        loops["depthwise_tap"](f, 0, src, 2, 4, 3, -127, three)
        return list(one) + list(three)
    if name == "requantize":
        acc = array.array("i", [0, 1, -1, INT32_MAX, INT32_MIN, 123456, -123456, 2 ** 20, -(2 ** 20) - 7, 99999,
                                -65536, 65535] + _lcg_values(8, 11, -(2 ** 24), 2 ** 24))
        mult = array.array("i", [2 ** 30, INT32_MAX, 1234567890, 1 << 30, 1518500250, 1073741824, 2000000000,
                                 1431655765, 1, 0, 1717986918, 1288490189] + _lcg_values(8, 13, 1 << 30, INT32_MAX))
        shift = array.array("i", [0, -1, -31, -5, 0, -12, -3, -8, 0, -2, -20, -9] + _lcg_values(8, 17, -15, 0))
        out = array.array("b", [0] * 24)
        loops["requantize"](acc, 20, mult, shift, memoryview(out), 2, -3, -128, 127)
        loops["requantize"](acc, 12, mult, shift, memoryview(out), 0, 5, -20, 90)
        return list(out)
    raise ValueError(name)


def choose(plain, candidates):
    """Per loop, the first candidate flavour whose loop reproduces the plain loop on the check
    data, else the plain loop. candidates: [(flavour, {name: function})]. Returns the chosen
    functions and their flavours by loop name."""
    chosen = {}
    flavours = {}
    for name in LOOP_NAMES:
        expected = _run_check(plain, name)
        chosen[name], flavours[name] = plain[name], "python"
        for flavour, loops in candidates:
            if name not in loops:
                continue
            try:
                ok = _run_check(loops, name) == expected
            except Exception:
                ok = False
            if ok:
                chosen[name], flavours[name] = loops[name], flavour
                break
    return chosen, flavours


# FLAVOURS says which flavour each inner loop runs as: {"dot_rows": "viper", ...}.
PLAIN = _compile(PLAIN_LOOPS, None)
_FAST, FLAVOURS = choose(PLAIN, [("viper", _compile(VIPER_LOOPS, None)),
                                 ("native", _compile(PLAIN_LOOPS, "@micropython.native"))])
gather = _FAST["gather"]
fill = _FAST["fill"]
copy = _FAST["copy"]
dot_rows = _FAST["dot_rows"]
depthwise_tap = _FAST["depthwise_tap"]
requantize = _FAST["requantize"]
requantize_plain = PLAIN["requantize"]


def use(flavour):
    """Force a flavour for every loop ("python", or "fast" for the best one that passed its
    check); for benchmarks and tests."""
    global gather, fill, copy, dot_rows, depthwise_tap, requantize
    loops = PLAIN if flavour == "python" else _FAST
    gather, fill, copy = loops["gather"], loops["fill"], loops["copy"]
    dot_rows, depthwise_tap, requantize = loops["dot_rows"], loops["depthwise_tap"], loops["requantize"]


def backend():
    """One word for the loops in use: viper, native, python, or mixed."""
    kinds = set()
    for name in LOOP_NAMES:
        kinds.add(FLAVOURS[name] if globals()[name] is _FAST[name] else "python")
    return kinds.pop() if len(kinds) == 1 else "mixed"


# -- the operators ---------------------------------------------------------------------------------
# Each takes the tuple the interpreter prepared for it at load time.

def fully_connected(p):
    (inp, out, batches, depth, out_depth, in_offset, filter_offset, out_offset, act_min, act_max,
     weights, bias, mult, shift, x, acc, fast_requant) = p
    req = requantize if fast_requant else requantize_plain
    for b in range(batches):
        gather(inp, b * depth, depth, in_offset, x, 0)
        dot_rows(weights, 0, depth, out_depth, x, bias, acc, 0)
        if filter_offset:
            correction = filter_offset * sum(x)
            for c in range(out_depth):
                acc[c] += correction
        req(acc, out_depth, mult, shift, out, b * out_depth, out_offset, act_min, act_max)


def conv_2d(p):
    (inp, out, win, filter_in_c, in_offset, out_offset, act_min, act_max,
     weights, bias, mult, shift, x, acc, fast_requant) = p
    (batches, in_h, in_w, in_c, out_h, out_w, out_c, filter_h, filter_w,
     stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w) = win
    req = requantize if fast_requant else requantize_plain
    groups = in_c // filter_in_c
    per_group = out_c // groups
    row_len = filter_h * filter_w * filter_in_c
    span = filter_w * in_c
    # One gather per filter row when a row of the window is contiguous in the input.
    whole_rows = groups == 1 and dilation_w == 1
    out_base = 0
    for b in range(batches):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_h
            for ox in range(out_w):
                x0 = ox * stride_w - pad_w
                row_inside = whole_rows and x0 >= 0 and x0 + filter_w <= in_w
                for g in range(groups):
                    k = 0
                    for fy in range(filter_h):
                        y = y0 + dilation_h * fy
                        if y < 0 or y >= in_h:
                            fill(x, k, filter_w * filter_in_c, 0)
                            k += filter_w * filter_in_c
                            continue
                        pixel = (b * in_h + y) * in_w
                        if row_inside:
                            gather(inp, (pixel + x0) * in_c, span, in_offset, x, k)
                            k += span
                            continue
                        for fx in range(filter_w):
                            xi = x0 + dilation_w * fx
                            if 0 <= xi < in_w:
                                gather(inp, (pixel + xi) * in_c + g * filter_in_c, filter_in_c, in_offset, x, k)
                            else:
                                fill(x, k, filter_in_c, 0)
                            k += filter_in_c
                    dot_rows(weights, g * per_group * row_len, row_len, per_group, x, bias, acc, g * per_group)
                req(acc, out_c, mult, shift, out, out_base, out_offset, act_min, act_max)
                out_base += out_c


def depthwise_conv_2d(p):
    (inp, out, win, multiplier, in_offset, out_offset, act_min, act_max,
     weights, bias, mult, shift, acc, fast_requant) = p
    (batches, in_h, in_w, in_c, out_h, out_w, out_c, filter_h, filter_w,
     stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w) = win
    req = requantize if fast_requant else requantize_plain
    out_base = 0
    for b in range(batches):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_h
            for ox in range(out_w):
                x0 = ox * stride_w - pad_w
                copy(bias, acc, out_c)
                for fy in range(filter_h):
                    y = y0 + dilation_h * fy
                    if y < 0 or y >= in_h:
                        continue
                    pixel = (b * in_h + y) * in_w
                    for fx in range(filter_w):
                        xi = x0 + dilation_w * fx
                        if 0 <= xi < in_w:
                            depthwise_tap(weights, (fy * filter_w + fx) * out_c, inp, (pixel + xi) * in_c, in_c,
                                          multiplier, in_offset, acc)
                req(acc, out_c, mult, shift, out, out_base, out_offset, act_min, act_max)
                out_base += out_c


def _pool(p, average):
    inp, out, win, act_min, act_max = p
    (batches, in_h, in_w, in_c, out_h, out_w, out_c, filter_h, filter_w,
     stride_h, stride_w, _, _, pad_h, pad_w) = win
    o = 0
    for b in range(batches):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_h
            fy0 = -y0 if y0 < 0 else 0
            fy1 = filter_h if filter_h < in_h - y0 else in_h - y0
            for ox in range(out_w):
                x0 = ox * stride_w - pad_w
                fx0 = -x0 if x0 < 0 else 0
                fx1 = filter_w if filter_w < in_w - x0 else in_w - x0
                count = (fy1 - fy0) * (fx1 - fx0) if fy1 > fy0 and fx1 > fx0 else 0
                for c in range(out_c):
                    if average:
                        acc = 0
                        for fy in range(fy0, fy1):
                            base = ((b * in_h + y0 + fy) * in_w + x0) * in_c + c
                            for fx in range(fx0, fx1):
                                acc += inp[base + fx * in_c]
                        if count == 0:
                            v = 0
                        elif acc >= 0:
                            v = (acc + count // 2) // count
                        else:
                            v = -((count // 2 - acc) // count)
                    else:
                        v = -128
                        for fy in range(fy0, fy1):
                            base = ((b * in_h + y0 + fy) * in_w + x0) * in_c + c
                            for fx in range(fx0, fx1):
                                u = inp[base + fx * in_c]
                                if u > v:
                                    v = u
                    out[o] = act_min if v < act_min else (act_max if v > act_max else v)
                    o += 1


def average_pool_2d(p):
    _pool(p, True)


def max_pool_2d(p):
    _pool(p, False)


def add(p):
    (in1, in2, out, count, ndim, shape, stride1, stride2, offset1, offset2, out_offset, left_shift,
     m1, s1, m2, s2, mo, so, act_min, act_max, broadcast) = p
    scale = 1 << left_shift
    if not broadcast:
        for i in range(count):
            a = mbqm((in1[i] + offset1) * scale, m1, s1)
            b = mbqm((in2[i] + offset2) * scale, m2, s2)
            v = mbqm(a + b, mo, so) + out_offset
            out[i] = act_min if v < act_min else (act_max if v > act_max else v)
        return
    counter = [0] * ndim
    i1 = i2 = 0
    for i in range(count):
        a = mbqm((in1[i1] + offset1) * scale, m1, s1)
        b = mbqm((in2[i2] + offset2) * scale, m2, s2)
        v = mbqm(a + b, mo, so) + out_offset
        out[i] = act_min if v < act_min else (act_max if v > act_max else v)
        # step the output index like an odometer, moving each input by its stride
        d = ndim - 1
        while d >= 0:
            counter[d] += 1
            i1 += stride1[d]
            i2 += stride2[d]
            if counter[d] < shape[d]:
                break
            i1 -= stride1[d] * shape[d]
            i2 -= stride2[d] * shape[d]
            counter[d] = 0
            d -= 1


def softmax(p):
    inp, out, rows, depth, exp_table, sum_terms = p
    base = 0
    for _ in range(rows):
        top = max(inp[base:base + depth])
        total = 0   # Q12.19; fewer than 4096 terms of at most 1.0 cannot overflow
        for c in range(base, base + depth):
            total += sum_terms[top - inp[c]]
        headroom = count_leading_zeros32(total)
        scale = one_over_one_plus_x((total << headroom) - 0x80000000)
        exponent = 12 - headroom + 31 - 8   # num_bits_over_unit + 31 - 8: output in 1/256 units
        for c in range(base, base + depth):
            if exponent > 31:
                v = -128
            else:
                v = rdbp(srdhm(scale, exp_table[top - inp[c]]), exponent) - 128
                v = -128 if v < -128 else (127 if v > 127 else v)
            out[c] = v
        base += depth


def logistic(p):
    inp, out, size, table = p
    for i in range(size):
        out[i] = table[inp[i] + 128]
