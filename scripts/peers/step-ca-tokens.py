#!/usr/bin/env python3
"""Helper for scripts/peers/step-ca.sh: the JWK provisioner and its one-time tokens.

  step-ca-tokens.py jwk  <key.pem>
      Prints the public JWK of a P-256 key (with "kid" = its RFC 7638
      SHA-256 thumbprint, as `step crypto jwk create` sets it), for the
      provisioner's "key" in ca.json.
  step-ca-tokens.py mint <key.pem> <provisioner-name> <audience> <csr-dir> <count> <out>
      Writes <count> request bodies for POST /1.0/sign, one JSON object a
      line: {"csr": "<PEM>", "ott": "<ES256 JWT>"}. The CSRs (csr-dir/*.pem,
      file name = common name) are reused round-robin; every token is fresh
      (its own jti), as step-ca refuses a token it has seen. Claims are those
      of `step ca token`: iss = provisioner name, aud, sub = CN, sans = [CN],
      jti, iat = nbf = now, exp = now + 5 min; header kid = the thumbprint.

Needs PyJWT with its crypto extra (`pip install 'pyjwt[crypto]'`), which
step-ca.sh installs into a venv in its cache directory.
"""
import base64
import hashlib
import json
import os
import secrets
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization


def b64u_uint(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def public_jwk(key):
    pub = key.public_key().public_numbers()
    if pub.curve.name != "secp256r1":
        sys.exit("the provisioner key must be P-256")
    jwk = {"crv": "P-256", "kty": "EC", "x": b64u_uint(pub.x), "y": b64u_uint(pub.y)}
    # RFC 7638: members in lexicographic order, no whitespace.
    canon = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canon).digest()).rstrip(b"=").decode()
    return dict(jwk, use="sig", alg="ES256", kid=kid)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "jwk":
        print(json.dumps(public_jwk(load_key(sys.argv[2]))))
        return
    if len(sys.argv) != 8 or sys.argv[1] != "mint":
        sys.exit(__doc__)
    _, _, key_path, issuer, audience, csr_dir, count, out = sys.argv
    key = load_key(key_path)
    kid = public_jwk(key)["kid"]
    csrs = []
    for name in sorted(os.listdir(csr_dir)):
        if name.endswith(".pem"):
            with open(os.path.join(csr_dir, name)) as f:
                csrs.append((name[:-4], f.read()))
    if not csrs:
        sys.exit(f"no CSRs in {csr_dir}")
    headers = {"kid": kid, "typ": "JWT"}
    now = int(time.time())
    with open(out, "w") as f:
        for i in range(int(count)):
            cn, pem = csrs[i % len(csrs)]
            claims = {
                "iss": issuer, "aud": audience, "sub": cn, "sans": [cn],
                "jti": secrets.token_hex(16), "iat": now, "nbf": now, "exp": now + 300,
            }
            ott = jwt.encode(claims, key, algorithm="ES256", headers=headers)
            f.write(json.dumps({"csr": pem, "ott": ott}, separators=(",", ":")))
            f.write("\n")


if __name__ == "__main__":
    main()
