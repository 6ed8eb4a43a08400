# Ed25519 verification and SHA-512 in pure MicroPython (mf_ota_ed25519).
import binascii
import unittest

import mf_ota
import mf_ota_ed25519 as ed
from ota_testkit import KEY, fixture

# RFC 8032, section 7.1, tests 1-3: (public key, message, signature).
RFC8032 = (
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
)
L = (1 << 252) + 27742317777372353535851937790883648493


def h(text):
    return binascii.unhexlify(text)


class Sha512(unittest.TestCase):
    def test_known_digests(self):
        self.assertEqual(ed.sha512(b"abc"), h(
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"))
        self.assertEqual(ed.sha512(b""), h(
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"))

    def test_block_boundaries(self):
        # Two-block padding cases give distinct, stable digests of the right size.
        seen = set()
        for n in (111, 112, 127, 128, 129, 255, 256):
            d = ed.sha512(b"a" * n)
            self.assertEqual(len(d), 64)
            seen.add(d)
        self.assertEqual(len(seen), 7)


class Verify(unittest.TestCase):
    def test_rfc8032_vectors(self):
        for pub, msg, sig in RFC8032:
            self.assertTrue(ed.verify(h(pub), h(sig), h(msg)))

    def test_any_changed_bit_fails(self):
        pub, msg, sig = (h(x) for x in RFC8032[2])
        for i in (0, 17, 31, 32, 45, 63):
            bad = bytearray(sig)
            bad[i] ^= 0x04
            self.assertFalse(ed.verify(pub, bad, msg))
        self.assertFalse(ed.verify(pub, sig, msg + b"\x00"))
        wrong_key = bytearray(pub)
        wrong_key[5] ^= 1
        self.assertFalse(ed.verify(bytes(wrong_key), sig, msg))

    def test_malformed_inputs_are_false_not_errors(self):
        pub, msg, sig = (h(x) for x in RFC8032[0])
        self.assertFalse(ed.verify(pub[:31], sig, msg))
        self.assertFalse(ed.verify(pub, sig[:63], msg))
        self.assertFalse(ed.verify(b"", b"", b""))
        # S >= L (a malleable signature) is refused.
        s = int.from_bytes(sig[32:], "little") + L
        self.assertFalse(ed.verify(pub, sig[:32] + s.to_bytes(32, "little"), msg))
        # A y coordinate that is no point on the curve (y = 2 has no x), and y >= p.
        self.assertFalse(ed.verify((2).to_bytes(32, "little"), sig, msg))
        self.assertFalse(ed.verify(b"\xff" * 32, sig, msg))

    def test_the_fixture_package_signature(self):
        data = fixture("v1_v2.mfu")
        n = data[6] | data[7] << 8
        manifest, sig = data[8:8 + n], data[8 + n:8 + n + 64]
        self.assertTrue(ed.verify(KEY, sig, mf_ota.SIGN_CONTEXT + manifest))
        self.assertFalse(ed.verify(KEY, sig, manifest))    # the context is part of what is signed
        self.assertFalse(ed.verify(fixture("other.pub"), sig, mf_ota.SIGN_CONTEXT + manifest))
