"""Shared by the scan.py scripts of the split TLS memory-scan tests
(test_tls_split_memscan.sh, test_tls_split_workers.sh, test_tls_split_client.sh;
lib.sh's scan_script puts this file next to them): read a process's memory,
derive TLS 1.3 traffic keys from a key log, and find many byte strings in
one pass."""
import hashlib, hmac


def hkdf_expand_label(secret, label, length):
    h = hashlib.sha384 if len(secret) == 48 else hashlib.sha256
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([i]), h).digest()
        out += t
        i += 1
    return out[:length]


def traffic_key(secret):
    """The record-protection key of a TLS 1.3 traffic secret (AES-128 or -256)."""
    return hkdf_expand_label(secret, b"key", 32 if len(secret) == 48 else 16)


def regions(pid, skip_huge=False):
    """The readable mappings of pid, without the kernel's [vvar]/[vsyscall];
    skip_huge: nor any of 1 GiB or more (sanitizer shadow in ASan builds:
    reserved, never data)."""
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        name = parts[5] if len(parts) > 5 else ""
        if "r" not in parts[1] or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
            continue
        if skip_huge and hi - lo > 1 << 30:
            continue
        yield lo, hi, name


def memory(pid, skip_huge=False):
    """Every readable mapping of pid, joined by NUL bytes."""
    chunks = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as m:
        for lo, hi, name in regions(pid, skip_huge):
            try:
                m.seek(lo)
                chunks.append(m.read(hi - lo))
            except (OSError, ValueError, OverflowError):
                pass
    return b"\x00".join(chunks)


def windows(secret, n=16):
    return {secret[i:i + n] for i in range(0, len(secret) - n + 1)}


def high_entropy(w):
    return len(set(w)) >= 24


def present(mem, needles):
    """The needles that occur in mem -- exactly those for which `w in mem` holds --
    in one pass over mem per needle length n instead of one per needle: an
    occurrence of a needle covers a whole block mem[q:q + k] with q a multiple of
    k = n // 2, so only those blocks are looked up, in an index of every k-byte
    piece of every needle, and each hit is compared in full."""
    found, by_len = set(), {}
    for w in needles:
        by_len.setdefault(len(w), set()).add(w)
    for n, ws in by_len.items():
        k = n // 2
        if k < 4:
            found |= {w for w in ws if w in mem}
            continue
        index = {}
        for w in ws:
            for o in range(n - k + 1):
                index.setdefault(w[o:o + k], []).append((o, w))
        get = index.get
        for q in range(0, len(mem) - k + 1, k):
            hit = get(mem[q:q + k])
            if hit:
                for o, w in hit:
                    if q >= o and mem[q - o:q - o + n] == w:
                        found.add(w)
    return found


def alive(pid):
    """Whether process pid still runs (is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def key_log(path):
    """An SSLKEYLOGFILE: its secrets by label, and the traffic keys of its
    CLIENT_/SERVER_TRAFFIC_SECRET_0 lines."""
    secrets, traffic = {}, []
    for line in open(path):
        f = line.split()
        if len(f) != 3:
            continue
        sec = bytes.fromhex(f[2])
        secrets.setdefault(f[0], []).append(sec)
        if f[0] in ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"):
            traffic.append(traffic_key(sec))
    return secrets, traffic


def private_key_bytes(pem_path):
    """The private scalar of an EC key in a PEM file, big-endian, full length."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    k = load_pem_private_key(open(pem_path, "rb").read(), None)
    return k.private_numbers().private_value.to_bytes((k.curve.key_size + 7) // 8, "big")


SESSION_STATE = "peer's session state (ticket, resumption secret)"


def secrets_of(keylog, opt):
    """What a scan looks for, by label, and the traffic keys (positive control):
    the key log's secrets; with opt["--stek"] the ticket keys a test build's
    handler revealed there; with opt["--key"] the private key of that PEM file;
    with opt["--session"] every high-entropy 32-byte window of the peer's saved
    session (ticket and resumption secret)."""
    secrets, traffic = key_log(keylog)
    if "--stek" in opt:
        for line in open(opt["--stek"]):
            if line.startswith("stek "):
                secrets.setdefault("session-ticket key", []).append(bytes.fromhex(line.split()[1]))
    if "--key" in opt:
        secrets["server private key"] = [private_key_bytes(opt["--key"])]
    if "--session" in opt:
        data = open(opt["--session"], "rb").read()
        secrets[SESSION_STATE] = [data[i:i + 32] for i in range(0, len(data) - 31)
                                  if high_entropy(data[i:i + 32])]
    return secrets, traffic


def needles_of(secrets):
    """What to search for per label: every 16-byte window of each secret (a part
    of one left in memory counts too); the session state's 32-byte windows whole."""
    return {label: [w for v in values for w in ({v} if label == SESSION_STATE else windows(v))]
            for label, values in secrets.items()}
