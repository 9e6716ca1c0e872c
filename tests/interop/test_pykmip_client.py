#!/usr/bin/python3
"""Interoperability test: PyKMIP's client (Debian python3-pykmip) against a KMIP server.

For each KMIP version PyKMIP speaks (1.0-1.4, 2.0) it runs the same sequence of
operations over mutually authenticated TLS and checks every answer against an
independent computation where one exists (the Python 'cryptography' module and
hashlib/hmac), e.g. the ciphertext of Encrypt equals AES-CBC computed locally with
the key bytes from Get, and a signature verifies locally with the public key.

Output: one line per (version, operation): "<version> <operation> PASS" or
"<version> <operation> FAIL <reason>", then "N passed, N failed"; a comment line
"# <version> over <TLS version> <cipher suite>" per connection.
Exit status: 1 if anything failed; with --expect FILE, 1 only if a pair listed in
FILE (for a version this run covers) failed or did not run (pairs passing beyond
the list are reported as NEW).

Must run under /usr/bin/python3 (the interpreter with Debian's packages).
"""
import argparse
import hashlib
import hmac
import logging
import os
import sys
import time
import warnings

warnings.simplefilter("ignore")  # PyKMIP uses the deprecated ssl.wrap_socket

from cryptography.hazmat.primitives import hashes, padding as sympadding  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding as asympadding  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402

from kmip.core import enums  # noqa: E402
from kmip.core.factories import attributes as attribute_factories  # noqa: E402
from kmip.pie import client as pie_client  # noqa: E402
from kmip.pie import objects  # noqa: E402

VERSIONS = {
    "1.0": enums.KMIPVersion.KMIP_1_0,
    "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.3": enums.KMIPVersion.KMIP_1_3,
    "1.4": enums.KMIPVersion.KMIP_1_4,
    "2.0": enums.KMIPVersion.KMIP_2_0,
}

# The order the operations run in; later steps use objects made by earlier ones.
OPERATIONS = [
    "create", "create_key_pair", "register_symmetric_key", "register_secret_data",
    "get", "locate", "activate", "get_attributes", "get_attribute_list",
    "encrypt", "decrypt", "sign", "signature_verify", "mac", "derive_key",
    "rekey", "revoke", "destroy",
]

# Fixed test inputs: FIPS-197 Appendix C.3 AES-256 key, so a reader can recognise it.
REGISTERED_KEY = bytes(range(32))
SECRET_DATA = b"interop secret data: not a real password"
PLAINTEXT = b"KMIP interop test plaintext, two+ blocks long....."
IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
MESSAGE = b"message to be signed by the server"
MAC_KEY = bytes(range(0x20, 0x40))
MAC_DATA = b"data to authenticate with HMAC-SHA-256"
SALT = b"keyfleet-interop-salt"
PBKDF2_ITERATIONS = 1000

M = enums.CryptographicUsageMask


class StepFailed(Exception):
    """An assertion about a server's answer did not hold."""


def expect(condition, reason):
    if not condition:
        raise StepFailed(reason)


def one_line(text, limit=240):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def attribute_values(attributes):
    """Maps attribute name -> list of values from a Get Attributes answer."""
    found = {}
    for attribute in attributes:
        name = attribute.attribute_name.value
        value = attribute.attribute_value
        found.setdefault(name, []).append(getattr(value, "value", value))
    return found


def enum_value(value):
    """The integer behind a PyKMIP primitive or a Python enum, however deeply wrapped."""
    while hasattr(value, "value"):
        value = value.value
    return value


class VersionRun:
    """Runs the operation sequence for one KMIP version over one connection."""

    def __init__(self, client, version, run_id):
        self.client = client
        self.version = version
        self.prefix = "interop-%s-%s" % (run_id, version)
        self.uids = {}
        self.ciphertext = None
        self.signature = None

    def need(self, what):
        expect(what in self.uids, "needs the object from a failed earlier step (%s)" % what)
        return self.uids[what]

    def key_bytes(self, uid):
        managed = self.client.get(uid)
        return bytes(managed.value)

    # -- the steps -------------------------------------------------------------

    def create(self):
        uid = self.client.create(
            enums.CryptographicAlgorithm.AES, 256, name=self.prefix + "-aes",
            cryptographic_usage_mask=[M.ENCRYPT, M.DECRYPT])
        expect(isinstance(uid, str) and uid, "no unique identifier returned")
        self.uids["aes"] = uid

    def create_key_pair(self):
        public_uid, private_uid = self.client.create_key_pair(
            enums.CryptographicAlgorithm.RSA, 2048,
            public_name=self.prefix + "-rsa-public", public_usage_mask=[M.VERIFY],
            private_name=self.prefix + "-rsa-private", private_usage_mask=[M.SIGN])
        expect(public_uid and private_uid and public_uid != private_uid,
               "public and private key identifiers missing or equal")
        self.uids["public"], self.uids["private"] = public_uid, private_uid

    def register_symmetric_key(self):
        key = objects.SymmetricKey(
            enums.CryptographicAlgorithm.AES, 256, REGISTERED_KEY,
            masks=[M.DERIVE_KEY], name=self.prefix + "-registered")
        uid = self.client.register(key)
        expect(isinstance(uid, str) and uid, "no unique identifier returned")
        self.uids["registered"] = uid

    def register_secret_data(self):
        secret = objects.SecretData(SECRET_DATA, enums.SecretDataType.PASSWORD,
                                    masks=[M.DERIVE_KEY], name=self.prefix + "-secret")
        uid = self.client.register(secret)
        expect(isinstance(uid, str) and uid, "no unique identifier returned")
        self.uids["secret"] = uid

    def get(self):
        key = self.client.get(self.need("registered"))
        expect(isinstance(key, objects.SymmetricKey), "registered key came back as %s" % type(key).__name__)
        expect(bytes(key.value) == REGISTERED_KEY, "registered key bytes differ")
        expect(key.cryptographic_length == 256, "length %s, not 256" % key.cryptographic_length)
        secret = self.client.get(self.need("secret"))
        expect(isinstance(secret, objects.SecretData), "secret data came back as %s" % type(secret).__name__)
        expect(bytes(secret.value) == SECRET_DATA, "secret data bytes differ")
        expect(enum_value(secret.data_type) == enum_value(enums.SecretDataType.PASSWORD),
               "Secret Data Type %s, registered as Password" % secret.data_type)
        created = self.key_bytes(self.need("aes"))
        expect(len(created) == 32, "created AES-256 key has %d bytes" % len(created))

    def locate(self):
        registered = self.need("registered")
        name = attribute_factories.AttributeFactory().create_attribute(
            enums.AttributeType.NAME, self.prefix + "-registered")
        found = self.client.locate(attributes=[name])
        expect(found == [registered], "locate by name found %s, expected [%s]" % (found, registered))
        missing = attribute_factories.AttributeFactory().create_attribute(
            enums.AttributeType.NAME, self.prefix + "-no-such-name")
        found = self.client.locate(attributes=[missing])
        expect(found == [], "locate of an unused name found %s" % found)

    def activate(self):
        for what in ("aes", "registered", "private", "public"):
            self.client.activate(self.need(what))
        self.expect_state("aes", enums.State.ACTIVE)

    def expect_state(self, what, state):
        _, attributes = self.client.get_attributes(self.need(what), ["State"])
        states = [enum_value(v) for v in attribute_values(attributes).get("State", [])]
        expect(states == [enum_value(state)], "state is %s, expected %s" % (states, state.name))

    def get_attributes(self):
        uid, attributes = self.client.get_attributes(
            self.need("aes"), ["Cryptographic Algorithm", "Cryptographic Length", "Name"])
        expect(uid == self.uids["aes"], "answer names object %s" % uid)
        values = attribute_values(attributes)
        algorithm = [enum_value(v) for v in values.get("Cryptographic Algorithm", [])]
        expect(algorithm == [enum_value(enums.CryptographicAlgorithm.AES)], "algorithm %s" % algorithm)
        expect(values.get("Cryptographic Length") == [256], "length %s" % values.get("Cryptographic Length"))
        names = [getattr(getattr(n, "name_value", None), "value", n) for n in values.get("Name", [])]
        expect(self.prefix + "-aes" in names, "name %s" % names)

    def get_attribute_list(self):
        names = self.client.get_attribute_list(self.need("aes"))
        for required in ("Cryptographic Algorithm", "Cryptographic Length", "State", "Name"):
            expect(required in names, "%r missing from %s" % (required, names))

    def aes_cbc_parameters(self):
        return {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
                "block_cipher_mode": enums.BlockCipherMode.CBC,
                "padding_method": enums.PaddingMethod.PKCS5}

    def encrypt(self):
        uid = self.need("aes")
        ciphertext, returned_iv = self.client.encrypt(
            PLAINTEXT, uid=uid, cryptographic_parameters=self.aes_cbc_parameters(),
            iv_counter_nonce=IV)
        expect(returned_iv in (None, IV), "server replaced the IV it was given")
        key = self.key_bytes(uid)
        padder = sympadding.PKCS7(128).padder()
        padded = padder.update(PLAINTEXT) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(IV)).encryptor()
        local = encryptor.update(padded) + encryptor.finalize()
        expect(bytes(ciphertext) == local, "ciphertext differs from AES-256-CBC computed locally")
        self.ciphertext = bytes(ciphertext)

    def decrypt(self):
        uid = self.need("aes")
        expect(self.ciphertext is not None, "needs the ciphertext from a failed encrypt")
        plaintext = self.client.decrypt(
            self.ciphertext, uid=uid, cryptographic_parameters=self.aes_cbc_parameters(),
            iv_counter_nonce=IV)
        expect(bytes(plaintext) == PLAINTEXT, "decrypt(encrypt(x)) != x")
        tampered = bytearray(self.ciphertext)
        tampered[-1] ^= 0x01
        try:
            plaintext = self.client.decrypt(
                bytes(tampered), uid=uid, cryptographic_parameters=self.aes_cbc_parameters(),
                iv_counter_nonce=IV)
        except Exception:
            return  # a padding refusal is a correct answer
        expect(bytes(plaintext) != PLAINTEXT, "tampered ciphertext decrypted to the plaintext")

    def rsa_parameters(self):
        return {"cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
                "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
                "padding_method": enums.PaddingMethod.PKCS1v15}

    def public_key(self):
        managed = self.client.get(self.need("public"))
        der = bytes(managed.value)
        try:
            return serialization.load_der_public_key(der)
        except ValueError as error:
            raise StepFailed("public key (%s) does not parse: %s"
                             % (managed.key_format_type, error))

    def sign(self):
        signature = self.client.sign(MESSAGE, uid=self.need("private"),
                                     cryptographic_parameters=self.rsa_parameters())
        expect(signature and len(signature) == 256, "signature is not 256 bytes")
        # Kept before the local check so signature_verify gets its own verdict.
        self.signature = bytes(signature)
        try:
            public_key = self.public_key()
        except StepFailed:
            raise
        except Exception as error:
            raise StepFailed("Get of the public key to check the signature locally: %s: %s"
                             % (type(error).__name__, error))
        try:
            public_key.verify(self.signature, MESSAGE, asympadding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise StepFailed("signature does not verify locally (RSASSA-PKCS1-v1_5 SHA-256)")

    def signature_verify(self):
        uid = self.need("public")
        expect(self.signature is not None, "needs the signature from a failed sign")
        valid = self.client.signature_verify(MESSAGE, self.signature, uid=uid,
                                             cryptographic_parameters=self.rsa_parameters())
        expect(enum_value(valid) == enum_value(enums.ValidityIndicator.VALID), "good signature judged %s" % valid)
        tampered = bytearray(self.signature)
        tampered[len(tampered) // 2] ^= 0x01
        invalid = self.client.signature_verify(MESSAGE, bytes(tampered), uid=uid,
                                               cryptographic_parameters=self.rsa_parameters())
        expect(enum_value(invalid) == enum_value(enums.ValidityIndicator.INVALID), "tampered signature judged %s" % invalid)
        invalid = self.client.signature_verify(MESSAGE + b"!", self.signature, uid=uid,
                                               cryptographic_parameters=self.rsa_parameters())
        expect(enum_value(invalid) == enum_value(enums.ValidityIndicator.INVALID), "signature of another message judged %s" % invalid)

    def mac(self):
        # A key of algorithm HMAC-SHA256 for MAC (keyfleetd, rightly, does not HMAC with
        # an AES key); registered so the MAC can be recomputed locally.
        key = objects.SymmetricKey(
            enums.CryptographicAlgorithm.HMAC_SHA256, 256, MAC_KEY,
            masks=[M.MAC_GENERATE, M.MAC_VERIFY], name=self.prefix + "-hmac")
        key_uid = self.client.register(key)
        self.client.activate(key_uid)
        uid, mac = self.client.mac(MAC_DATA, uid=key_uid,
                                   algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)
        expect(uid == key_uid, "answer names object %s, not %s" % (uid, key_uid))
        local = hmac.new(MAC_KEY, MAC_DATA, hashlib.sha256).digest()
        expect(hmac.compare_digest(bytes(mac), local), "MAC differs from HMAC-SHA-256 computed locally")

    def derive_key(self):
        uid = self.client.derive_key(
            enums.ObjectType.SYMMETRIC_KEY, [self.need("registered")],
            enums.DerivationMethod.PBKDF2,
            {"cryptographic_parameters": {"hashing_algorithm": enums.HashingAlgorithm.SHA_256},
             "salt": SALT, "iteration_count": PBKDF2_ITERATIONS},
            cryptographic_length=256, cryptographic_algorithm=enums.CryptographicAlgorithm.AES)
        expect(isinstance(uid, str) and uid, "no unique identifier returned")
        local = hashlib.pbkdf2_hmac("sha256", REGISTERED_KEY, SALT, PBKDF2_ITERATIONS, 32)
        expect(self.key_bytes(uid) == local, "derived key differs from PBKDF2-HMAC-SHA-256 computed locally")

    def rekey(self):
        old = self.need("aes")
        new = self.client.rekey(uid=old, offset=0)
        expect(isinstance(new, str) and new and new != old, "rekey returned %r" % new)
        expect(len(self.key_bytes(new)) == 32, "replacement key is not 256 bits")
        expect(self.key_bytes(new) != self.key_bytes(old), "replacement key equals the old key")

    def revoke(self):
        self.client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION,
                           uid=self.need("aes"), revocation_message="interop test")
        self.expect_state("aes", enums.State.DEACTIVATED)

    def destroy(self):
        uid = self.need("aes")
        self.client.destroy(uid)
        try:
            self.client.get(uid)
        except Exception:
            return
        raise StepFailed("Get of a destroyed key still returned it")


def open_client(args, version):
    client = pie_client.ProxyKmipClient(
        hostname=args.host, port=args.port, cert=args.cert, key=args.key, ca=args.ca,
        config_file=os.devnull, kmip_version=VERSIONS[version],
        ssl_version="PROTOCOL_TLSv1_2" if args.tls12 else None)
    # ProxyKmipClient takes no timeout argument; its proxy reads this one at open().
    client.proxy.timeout = args.timeout
    client.open()
    return client


def run_version(args, version, run_id, report):
    try:
        client = open_client(args, version)
    except Exception as error:
        for operation in OPERATIONS:
            report(version, operation, "connect: %s: %s" % (type(error).__name__, error))
        return
    tls = client.proxy.socket
    print("# %s over %s %s" % (version, tls.version(), tls.cipher()[0]), flush=True)
    steps = VersionRun(client, version, run_id)
    try:
        for index, operation in enumerate(OPERATIONS):
            try:
                getattr(steps, operation)()
                report(version, operation, None)
                continue
            except StepFailed as error:
                report(version, operation, str(error))
                continue
            except Exception as error:
                report(version, operation, "%s: %s" % (type(error).__name__, error))
                if not isinstance(error, OSError):
                    continue
            # The connection is gone (OSError covers ssl.SSLError and resets):
            # reconnect once so that later steps still get their chance.
            steps.client.close()
            try:
                steps.client = open_client(args, version)
            except Exception as error:
                for rest in OPERATIONS[index + 1:]:
                    report(version, rest, "reconnect: %s: %s" % (type(error).__name__, error))
                return
    finally:
        steps.client.close()


def read_expected(path):
    pairs = set()
    with open(path) as listing:
        for line in listing:
            line = line.split("#", 1)[0].strip()
            if line:
                version, operation = line.split()
                pairs.add((version, operation))
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5696)
    parser.add_argument("--ca", required=True, help="CA certificate that signed the server's")
    parser.add_argument("--cert", required=True, help="client certificate (PEM)")
    parser.add_argument("--key", required=True, help="client private key (PEM)")
    parser.add_argument("--versions", default=",".join(VERSIONS),
                        help="comma-separated KMIP versions (default: all of %s)" % ",".join(VERSIONS))
    parser.add_argument("--tls12", action="store_true",
                        help="TLS 1.2 only (default: PyKMIP's default, TLS 1.2 or 1.3)")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per call (default 15)")
    parser.add_argument("--expect", help="file of '<version> <operation>' pairs that must pass")
    parser.add_argument("--write-passed", help="write the pairs that passed to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="PyKMIP's own logging")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)

    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    for version in versions:
        if version not in VERSIONS:
            parser.error("unknown KMIP version %s" % version)
    results = {}

    def report(version, operation, failure):
        results[(version, operation)] = failure
        print("%s %s %s" % (version, operation, "PASS" if failure is None else "FAIL " + one_line(failure)),
              flush=True)

    run_id = "%d-%d" % (int(time.time()), os.getpid())
    for version in versions:
        run_version(args, version, run_id, report)

    passed = sorted(pair for pair, failure in results.items() if failure is None)
    failed = len(results) - len(passed)
    print("%d passed, %d failed" % (len(passed), failed))
    if args.write_passed:
        order = {op: i for i, op in enumerate(OPERATIONS)}
        with open(args.write_passed, "w") as out:
            out.write("# (KMIP version, operation) pairs PyKMIP must pass against keyfleetd;\n"
                      "# generated by tests/interop/test_pykmip_client.py --write-passed\n")
            for version, operation in sorted(passed, key=lambda p: (p[0], order[p[1]])):
                out.write("%s %s\n" % (version, operation))
    if not args.expect:
        return 1 if failed else 0
    # Only the versions this run covered (--versions) are held to the list.
    expected = {pair for pair in read_expected(args.expect) if pair[0] in versions}
    broken = sorted(pair for pair in expected if results.get(pair, "did not run") is not None)
    for version, operation in broken:
        print("EXPECTED PASS BROKE: %s %s: %s" % (version, operation,
                                                 one_line(results.get((version, operation), "did not run"))))
    for version, operation in sorted(set(passed) - expected):
        print("NEW PASS (add to %s): %s %s" % (os.path.basename(args.expect), version, operation))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
