# The int8 interpreter: runs the operator records of a model file over one arena.
#
# mf_model reads the file and hands over the records and constant sections; this module checks
# every record against the arena and its sections (a hostile or damaged file must give an
# error, never an out-of-bounds access in a viper loop), prepares each operator's arguments once,
# and then runs them in order on each invoke. The kernels live in mf_kernels.
import array

import mf_kernels as K

OP_NAMES = {0: "ADD", 1: "AVERAGE_POOL_2D", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED",
            14: "LOGISTIC", 17: "MAX_POOL_2D", 25: "SOFTMAX"}
WINDOW_FIELDS = 15
MAX_DIMS = 6
# Parameters and constant sections each operator record carries (docs/micropython-model-format.md).
PARAM_COUNTS = {0: 3 + 2 + 3 * MAX_DIMS + 12, 1: 2 + WINDOW_FIELDS + 2, 3: 2 + WINDOW_FIELDS + 5,
                4: 2 + WINDOW_FIELDS + 5, 9: 10, 14: 3, 17: 2 + WINDOW_FIELDS + 2, 25: 4}
SECTION_COUNTS = {0: 0, 1: 0, 3: 4, 4: 4, 9: 4, 14: 1, 17: 0, 25: 1}


class ModelFormatError(ValueError):
    """The model file is not one this interpreter can run: wrong magic or version, truncated,
    damaged, or inconsistent. The message says what and where."""


class Interpreter:
    def __init__(self, arena_bytes, records, sections):
        # records: (opcode, params, first section, section count); sections: (typecode, array)
        try:
            self.arena = array.array("b", bytearray(arena_bytes))
        except MemoryError:
            raise MemoryError("the model needs a %d-byte arena, more than the heap has free" % arena_bytes)
        self.view = memoryview(self.arena)
        self._sections = sections
        self._x_len = 1
        self._acc_len = 1
        prepared = [self._prepare(i, record) for i, record in enumerate(records)]
        # Scratch shared by every operator: the offset input row (int16) and the accumulators (int32).
        self.x = array.array("h", bytearray(2 * self._x_len))
        self.acc = array.array("i", bytearray(4 * self._acc_len))
        self.steps = []
        for kernel, args in prepared:
            self.steps.append((kernel, tuple(self.x if a is _X else self.acc if a is _ACC else a for a in args)))
        self.kernel_names = [OP_NAMES[r[0]] for r in records]

    def run(self):
        for kernel, args in self.steps:
            kernel(args)

    # -- checks ---------------------------------------------------------------------------------

    def _fail(self, index, opcode, what):
        raise ModelFormatError("operator %d (%s): %s; the model file is damaged or was not written by "
                               "mcuforge: export it again" % (index, OP_NAMES.get(opcode, opcode), what))

    def _operand(self, index, opcode, ref, nbytes, what):
        """An int8 operand as a signed memoryview: a slice of the arena, or a constant section."""
        if nbytes <= 0:
            self._fail(index, opcode, "%s has %d bytes" % (what, nbytes))
        if ref >= 0:
            if ref + nbytes > len(self.arena):
                self._fail(index, opcode, "%s (%d bytes at offset %d) runs past the %d-byte arena"
                           % (what, nbytes, ref, len(self.arena)))
            return self.view[ref:ref + nbytes]
        section = self._section(index, opcode, -1 - ref, "b", nbytes, what)
        return memoryview(section)

    def _section(self, index, opcode, number, typecode, count, what):
        if not 0 <= number < len(self._sections):
            self._fail(index, opcode, "%s refers to constant section %d of %d" % (what, number, len(self._sections)))
        found, section = self._sections[number]   # MicroPython arrays do not expose their typecode
        if found != typecode or len(section) != count:
            self._fail(index, opcode, "%s: constant section %d holds %d values of type %s, %d of type %s expected"
                       % (what, number, len(section), found, count, typecode))
        return section

    def _window(self, index, opcode, win):
        for value, name in zip(win, ("batches", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "filter_h",
                                     "filter_w", "stride_h", "stride_w", "dilation_h", "dilation_w")):
            if value < 1:
                self._fail(index, opcode, "%s is %d" % (name, value))
        if win[13] < 0 or win[14] < 0:
            self._fail(index, opcode, "negative padding")
        return win

    def _requant(self, index, opcode, first, channels, weight_count):
        weights = self._section(index, opcode, first, "b", weight_count, "weights")
        bias = self._section(index, opcode, first + 1, "i", channels, "bias")
        mult = self._section(index, opcode, first + 2, "i", channels, "multipliers")
        shift = self._section(index, opcode, first + 3, "i", channels, "shifts")
        right_only = True
        for c in range(channels):
            self._multiplier(index, opcode, mult[c], shift[c])
            if shift[c] > 0:
                right_only = False
        # The viper requantize handles right shifts only.
        return memoryview(weights), bias, mult, shift, right_only

    def _clamp(self, index, opcode, act_min, act_max):
        if not -128 <= act_min <= act_max <= 127:
            self._fail(index, opcode, "clamp range [%d, %d] is not within int8" % (act_min, act_max))

    def _offsets(self, index, opcode, *offsets):
        # Zero-point offsets: an int8 plus its offset must fit the int16 scratch row.
        for value in offsets:
            if not -256 <= value <= 256:
                self._fail(index, opcode, "zero-point offset %d is outside [-256, 256]" % value)

    def _multiplier(self, index, opcode, multiplier, shift):
        if multiplier < 0 or not -31 <= shift <= 30:
            self._fail(index, opcode, "multiplier %d with shift %d" % (multiplier, shift))

    # -- one record -----------------------------------------------------------------------------

    def _prepare(self, index, record):
        opcode, params, first, count = record
        if opcode not in OP_NAMES:
            raise ModelFormatError("operator %d has code %d, which this interpreter does not know (it runs %s); "
                                   "update the device runtime or export the model again"
                                   % (index, opcode, ", ".join(OP_NAMES[k] for k in sorted(OP_NAMES))))
        if len(params) != PARAM_COUNTS[opcode] or count != SECTION_COUNTS[opcode]:
            self._fail(index, opcode, "%d parameters and %d constant sections, %d and %d expected"
                       % (len(params), count, PARAM_COUNTS[opcode], SECTION_COUNTS[opcode]))
        if opcode == 9:
            return self._fully_connected(index, params, first)
        if opcode in (3, 4):
            return self._conv(index, opcode, params, first)
        if opcode in (1, 17):
            win = self._window(index, opcode, params[2:2 + WINDOW_FIELDS])
            if win[3] != win[6]:
                self._fail(index, opcode, "pooling changes the channel count")
            self._clamp(index, opcode, params[-2], params[-1])
            inp = self._operand(index, opcode, params[0], win[0] * win[1] * win[2] * win[3], "input")
            out = self._operand(index, opcode, params[1], win[0] * win[4] * win[5] * win[6], "output")
            kernel = K.average_pool_2d if opcode == 1 else K.max_pool_2d
            return kernel, (inp, out, win, params[-2], params[-1])
        if opcode == 0:
            return self._add(index, params)
        if opcode == 25:
            rows, depth = params[2], params[3]
            if rows < 1 or not 1 <= depth <= 4095:
                self._fail(index, opcode, "%d rows of %d values" % (rows, depth))
            inp = self._operand(index, opcode, params[0], rows * depth, "input")
            out = self._operand(index, opcode, params[1], rows * depth, "output")
            table = self._section(index, opcode, first, "i", 256, "exp table")
            terms = array.array("i", [K.rdbp(v, 12) for v in table])   # each exp() term in Q12.19
            return K.softmax, (inp, out, rows, depth, table, terms)
        size = params[2]   # LOGISTIC
        inp = self._operand(index, opcode, params[0], size, "input")
        out = self._operand(index, opcode, params[1], size, "output")
        table = self._section(index, opcode, first, "b", 256, "table")
        return K.logistic, (inp, out, size, memoryview(table))

    def _fully_connected(self, index, params, first):
        (in_ref, out_ref, batches, depth, out_depth, in_offset, filter_offset, out_offset,
         act_min, act_max) = params
        if batches < 1 or depth < 1 or out_depth < 1:
            self._fail(index, 9, "%d batches of %d -> %d values" % (batches, depth, out_depth))
        self._clamp(index, 9, act_min, act_max)
        self._offsets(index, 9, in_offset, filter_offset, out_offset)
        inp = self._operand(index, 9, in_ref, batches * depth, "input")
        out = self._operand(index, 9, out_ref, batches * out_depth, "output")
        weights, bias, mult, shift, right_only = self._requant(index, 9, first, out_depth, out_depth * depth)
        self._x_len = max(self._x_len, depth)
        self._acc_len = max(self._acc_len, out_depth)
        return K.fully_connected, (inp, out, batches, depth, out_depth, in_offset, filter_offset, out_offset,
                                   act_min, act_max, weights, bias, mult, shift, _X, _ACC, right_only)

    def _conv(self, index, opcode, params, first):
        win = self._window(index, opcode, params[2:2 + WINDOW_FIELDS])
        batches, in_h, in_w, in_c, out_h, out_w, out_c, filter_h, filter_w = win[:9]
        extra, in_offset, out_offset, act_min, act_max = params[2 + WINDOW_FIELDS:]
        self._clamp(index, opcode, act_min, act_max)
        self._offsets(index, opcode, in_offset, out_offset)
        inp = self._operand(index, opcode, params[0], batches * in_h * in_w * in_c, "input")
        out = self._operand(index, opcode, params[1], batches * out_h * out_w * out_c, "output")
        if opcode == 3:
            filter_in_c = extra
            if filter_in_c < 1 or in_c % filter_in_c or out_c % (in_c // filter_in_c):
                self._fail(index, opcode, "%d input channels do not split into groups of %d for %d outputs"
                           % (in_c, filter_in_c, out_c))
            row_len = filter_h * filter_w * filter_in_c
            weights, bias, mult, shift, right_only = self._requant(index, opcode, first, out_c, out_c * row_len)
            self._x_len = max(self._x_len, row_len)
            self._acc_len = max(self._acc_len, out_c)
            return K.conv_2d, (inp, out, win, filter_in_c, in_offset, out_offset, act_min, act_max,
                               weights, bias, mult, shift, _X, _ACC, right_only)
        multiplier = extra
        if multiplier < 1 or in_c * multiplier != out_c:
            self._fail(index, opcode, "%d input channels times depth multiplier %d is not %d output channels"
                       % (in_c, multiplier, out_c))
        weights, bias, mult, shift, right_only = self._requant(index, opcode, first, out_c,
                                                               filter_h * filter_w * out_c)
        self._acc_len = max(self._acc_len, out_c)
        return K.depthwise_conv_2d, (inp, out, win, multiplier, in_offset, out_offset, act_min, act_max,
                                     weights, bias, mult, shift, _ACC, right_only)

    def _add(self, index, params):
        count, ndim = params[3], params[4]
        if count < 1 or not 1 <= ndim <= MAX_DIMS:
            self._fail(index, 0, "%d elements in %d dimensions" % (count, ndim))
        shape = params[5:5 + ndim]
        stride1 = params[11:11 + ndim]
        stride2 = params[17:17 + ndim]
        total = 1
        for d in shape:
            total *= d
        if total != count or min(shape) < 1:
            self._fail(index, 0, "output shape %s does not hold %d elements" % (list(shape), count))
        # The elements each input spans (its largest index + 1) must lie within it.
        spans = []
        for strides in (stride1, stride2):
            last = 0
            for d in range(ndim):
                if strides[d] < 0:
                    self._fail(index, 0, "negative broadcast stride")
                last += strides[d] * (shape[d] - 1)
            spans.append(last + 1)
        in1 = self._operand(index, 0, params[0], spans[0], "input 1")
        in2 = self._operand(index, 0, params[1], spans[1], "input 2")
        out = self._operand(index, 0, params[2], count, "output")
        offset1, offset2, out_offset, left_shift, m1, s1, m2, s2, mo, so, act_min, act_max = params[23:35]
        self._clamp(index, 0, act_min, act_max)
        self._offsets(index, 0, offset1, offset2, out_offset)
        for multiplier, shift in ((m1, s1), (m2, s2), (mo, so)):
            self._multiplier(index, 0, multiplier, shift)
        if not 0 <= left_shift <= 24:
            self._fail(index, 0, "left shift %d" % left_shift)
        contiguous = []
        step = 1
        for d in range(ndim - 1, -1, -1):
            contiguous.insert(0, step)
            step *= shape[d]
        broadcast = list(stride1) != contiguous or list(stride2) != contiguous
        return K.add, (in1, in2, out, count, ndim, shape, stride1, stride2, offset1, offset2, out_offset,
                       left_shift, m1, s1, m2, s2, mo, so, act_min, act_max, broadcast)


# Placeholders for the shared scratch buffers, replaced once their sizes are known.
_X = object()
_ACC = object()
