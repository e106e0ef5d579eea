#!/usr/bin/env python3
"""Generate the weak-key CSR fixtures in tests/data/csr/.

Each CSR carries a valid SHA-256 signature made with its own private key (so a
server gets past signature verification and reaches the public-key policy) and
the subject CN=fixture. The private keys are never written anywhere.

    python3 -m venv /tmp/venv-fixtures
    /tmp/venv-fixtures/bin/pip install cryptography
    /tmp/venv-fixtures/bin/python scripts/gen-weak-csrs.py [OUTDIR]

OUTDIR defaults to tests/data/csr next to this script's parent directory.
Every run makes new random keys, so the files change each time.
"""

from __future__ import annotations

import math
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

E = 65537

# Primes below 1000 for cheap trial division before Miller-Rabin.
_SMALL = [p for p in range(3, 1000) if all(p % d for d in range(2, math.isqrt(p) + 1))]


def is_probable_prime(n: int, rounds: int = 40) -> bool:
    """Miller-Rabin with random bases (error probability < 4^-rounds)."""
    if n < 2:
        return False
    for p in [2] + _SMALL:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def next_prime(x: int, e: int = E) -> int:
    """Smallest prime p >= x with gcd(e, p - 1) = 1."""
    x |= 1
    while not (is_probable_prime(x) and math.gcd(e, x - 1) == 1):
        x += 2
    return x


def random_bits_top2(bits: int) -> int:
    """Random integer of exactly `bits` bits with the two top bits set
    (so a product of two such numbers has exactly 2*bits bits)."""
    return secrets.randbits(bits) | (3 << (bits - 2))


def private_key(p: int, q: int, e: int = E) -> rsa.RSAPrivateKey:
    """Build an RSA key from its primes, computing the CRT values ourselves."""
    n = p * q
    lam = math.lcm(p - 1, q - 1)
    d = pow(e, -1, lam)
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=d % (p - 1),
        dmq1=d % (q - 1),
        iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    # The whole point is to make keys that a validating library would refuse.
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


def csr_pem(key: rsa.RSAPrivateKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fixture")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def small_factor_key() -> rsa.RSAPrivateKey:
    """n = 7919 * q (7919 is the 1,000th prime), n exactly 2048 bits."""
    p = 7919
    while True:
        q = next_prime(random_bits_top2(2048) // p)
        if (p * q).bit_length() == 2048:
            return private_key(p, q)


def primorial(count: int) -> int:
    primes = [2] + _SMALL
    return math.prod(primes[:count])


def roca_prime(m: int, bits: int) -> int:
    """Infineon RSALib-style prime p = k*M + (65537^a mod M)
    (Nemec et al., "The Return of Coppersmith's Attack", CCS 2017, §2.2)."""
    while True:
        a = secrets.randbelow(m)
        c = pow(E, a, m)
        k = random_bits_top2(bits) // m
        for _ in range(20_000):
            p = k * m + c
            if is_probable_prime(p) and math.gcd(E, p - 1) == 1:
                return p
            k += 1


def roca_key() -> rsa.RSAPrivateKey:
    # For 2048-bit keys RSALib uses M = product of the first 126 primes.
    m = primorial(126)
    while True:
        p = roca_prime(m, 1024)
        q = roca_prime(m, 1024)
        if p != q and (p * q).bit_length() == 2048:
            return private_key(p, q)


def fermat_key() -> rsa.RSAPrivateKey:
    """p, q consecutive primes (as far as gcd(e, p-1) = 1 allows) near 2^1024."""
    while True:
        p = next_prime(random_bits_top2(1024))
        q = next_prime(p + 2)
        if (p * q).bit_length() == 2048:
            return private_key(p, q)


def e3_key() -> rsa.RSAPrivateKey:
    """Ordinary random primes, but e = 3 (needs p, q = 2 mod 3)."""
    while True:
        p = next_prime(random_bits_top2(1024), e=3)
        q = next_prime(random_bits_top2(1024), e=3)
        if p != q and (p * q).bit_length() == 2048:
            return private_key(p, q, e=3)


def rsa8192_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=E, key_size=8192)


FIXTURES = {
    "rsa-small-factor.pem": small_factor_key,
    "rsa-roca.pem": roca_key,
    "rsa-fermat.pem": fermat_key,
    "rsa-e3.pem": e3_key,
    "rsa-8192.pem": rsa8192_key,
}


def main() -> None:
    default = Path(__file__).resolve().parent.parent / "tests" / "data" / "csr"
    outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    outdir.mkdir(parents=True, exist_ok=True)
    for name, make in FIXTURES.items():
        key = make()
        (outdir / name).write_bytes(csr_pem(key))
        del key
        print(f"wrote {outdir / name}")


if __name__ == "__main__":
    main()
