# Ed25519 signature verification (RFC 8032) in pure MicroPython, for signed OTA packages.
#
#     import mf_ota_ed25519
#     mf_ota_ed25519.verify(public_key_32, signature_64, message)   # True or False
#
# Only verification: the device never signs. Stock firmware has neither SHA-512 nor curve
# arithmetic, so both are here, on MicroPython's arbitrary-precision integers (every port that
# runs the runtime has them). The check is the cofactorless one that RFC 8032 section 5.1.7
# allows and that OpenSSL (the host's `cryptography` package) makes: encode([S]B - [k]A) == R,
# with S < L and A a valid point, so what the host signs is exactly what the device accepts.
#
# Cost: one double-scalar multiplication (Straus-Shamir, 2-bit windows, extended twisted
# Edwards coordinates): ~256 doublings and ~128 additions, ~3,300 multiplications mod p, one
# inversion. A native helper module may take over (see _native below); it must expose
# verify(public_key, signature, message) -> bool.
import struct

_P = (1 << 255) - 19
_L = (1 << 252) + 27742317777372353535851937790883648493
# d = -121665 / 121666 mod p, 2d, and sqrt(-1) = 2^((p-1)/4) mod p
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960

try:
    import mf_ota_native as _native  # an optional user C module; pure Python below otherwise
except ImportError:
    _native = None


class SignatureError(ValueError):
    pass


# ---- SHA-512 (FIPS 180-4) ------------------------------------------------------------------
_K512 = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc, 0x3956c25bf348b538,
    0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118, 0xd807aa98a3030242, 0x12835b0145706fbe,
    0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2, 0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235,
    0xc19bf174cf692694, 0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5, 0x983e5152ee66dfab,
    0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4, 0xc6e00bf33da88fc2, 0xd5a79147930aa725,
    0x06ca6351e003826f, 0x142929670a0e6e70, 0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df, 0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30, 0xd192e819d6ef5218,
    0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8, 0x19a4c116b8d2d0c8, 0x1e376c085141ab53,
    0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8, 0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3, 0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b, 0xca273eceea26619c,
    0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178, 0x06f067aa72176fba, 0x0a637dc5a2c898a6,
    0x113f9804bef90dae, 0x1b710b35131c471b, 0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c, 0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817)
_H512 = (0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
         0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179)
_M64 = 0xFFFFFFFFFFFFFFFF


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def _sha512_block(h, block):
    w = list(struct.unpack(">16Q", block))
    for i in range(16, 80):
        a = w[i - 15]
        b = w[i - 2]
        s0 = _rotr(a, 1) ^ _rotr(a, 8) ^ (a >> 7)
        s1 = _rotr(b, 19) ^ _rotr(b, 61) ^ (b >> 6)
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & _M64)
    a, b, c, d, e, f, g, hh = h
    for i in range(80):
        t1 = (hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)) + ((e & f) ^ (~e & g)) + _K512[i] + w[i]) & _M64
        t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M64
        hh = g
        g = f
        f = e
        e = (d + t1) & _M64
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M64
    return [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]


def sha512(data):
    """The SHA-512 digest of `data` (bytes-like), 64 bytes."""
    data = bytes(data)
    n = len(data)
    padded = data + b"\x80" + bytes((111 - n) % 128) + struct.pack(">QQ", 0, n * 8)
    h = list(_H512)
    for i in range(0, len(padded), 128):
        h = _sha512_block(h, padded[i:i + 128])
    return struct.pack(">8Q", *h)


# ---- the curve -----------------------------------------------------------------------------
def _inv(x):
    return pow(x, _P - 2, _P)


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 % _P * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p1):
    x1, y1, z1, _ = p1
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


_ZERO = (0, 1, 1, 0)


def _decode_point(data):
    """The point encoded in 32 bytes, or None when they encode none."""
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    v3 = v * v % _P * v % _P
    x = u * v3 % _P * pow(u * v3 % _P * v3 % _P * v % _P, (_P - 5) // 8, _P) % _P
    vx2 = v * x % _P * x % _P
    if vx2 != u:
        if vx2 != (_P - u) % _P:
            return None
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode_point(pt):
    x, y, z, _ = pt
    zi = _inv(z)
    x = x * zi % _P
    y = y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _double_scalar_mult(s, p, k, q):
    """[s]p + [k]q, two bits of each scalar per step (a 16-entry table of i*p + j*q)."""
    table = [_ZERO] * 16
    p2 = _double(p)
    q2 = _double(q)
    singles_p = (_ZERO, p, p2, _add(p2, p))
    singles_q = (_ZERO, q, q2, _add(q2, q))
    for i in range(4):
        for j in range(4):
            if i == 0:
                table[j] = singles_q[j]
            elif j == 0:
                table[i * 4] = singles_p[i]
            else:
                table[i * 4 + j] = _add(singles_p[i], singles_q[j])
    acc = _ZERO
    started = False
    for shift in range(254, -1, -2):
        if started:
            acc = _double(_double(acc))
        index = ((s >> shift) & 3) * 4 + ((k >> shift) & 3)
        if index:
            acc = _add(acc, table[index]) if started else table[index]
            started = True
    return acc


_B = (_BX, _BY, 1, _BX * _BY % _P)


def verify(public_key, signature, message):
    """True when `signature` (64 bytes) is `public_key`'s (32 bytes) Ed25519 signature of
    `message`; False for any other input, malformed ones included."""
    public_key = bytes(public_key)
    signature = bytes(signature)
    if len(public_key) != 32 or len(signature) != 64:
        return False
    if _native is not None:
        return bool(_native.verify(public_key, signature, bytes(message)))
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    a = _decode_point(public_key)
    if a is None:
        return False
    k = int.from_bytes(sha512(signature[:32] + public_key + bytes(message)), "little") % _L
    minus_a = ((_P - a[0]) % _P, a[1], 1, (_P - a[3]) % _P)
    return _encode_point(_double_scalar_mult(s, _B, k, minus_a)) == signature[:32]
