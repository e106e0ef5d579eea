"""The openEO/EGI service-account pattern against a real slcs.

A tiny fake openEO backend lists slcs as its OIDC provider
(GET /credentials/oidc). The real `openeo` Python client authenticates with
`authenticate_oidc_client_credentials` (client id and secret from the
environment, as the openEO guide says), and the backend verifies the bearer
token it receives against slcs's JWKS with PyJWT before answering /me.

Environment: SLCS_TEST_ISSUER (https URL of slcs), OPENEO_CLIENT_ID,
OPENEO_CLIENT_SECRET, REQUESTS_CA_BUNDLE (the slcs CA). Prints the user id
the backend saw and exits 0 on success.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import openeo
import requests

ISSUER = os.environ["SLCS_TEST_ISSUER"]
CA_BUNDLE = os.environ["REQUESTS_CA_BUNDLE"]


def verify(token: str) -> dict:
    jwks = requests.get(f"{ISSUER}/jwks", verify=CA_BUNDLE, timeout=10).json()
    header = jwt.get_unverified_header(token)
    if header.get("typ") not in ("at+jwt", "application/at+jwt"):
        raise ValueError(f"unexpected token type {header.get('typ')}")
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    return jwt.decode(
        token,
        key=jwt.PyJWK(key).key,
        algorithms=[key["alg"]],
        issuer=ISSUER,
        audience=f"{ISSUER}/certificate",
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )


class Backend(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path in ("/", ""):
            self.reply(200, {
                "api_version": "1.2.0", "backend_version": "0.0.1", "stac_version": "1.0.0",
                "id": "fake-openeo", "title": "fake", "description": "fake backend",
                "endpoints": [
                    {"path": "/credentials/oidc", "methods": ["GET"]},
                    {"path": "/me", "methods": ["GET"]},
                ],
                "links": [],
            })
        elif self.path == "/credentials/oidc":
            self.reply(200, {"providers": [{
                "id": "slcs", "issuer": ISSUER, "title": "slcs", "scopes": ["openid"],
            }]})
        elif self.path == "/me":
            auth = self.headers.get("Authorization", "")
            prefix = "Bearer oidc/slcs/"
            if not auth.startswith(prefix):
                self.reply(401, {"code": "AuthenticationRequired", "message": auth[:40]})
                return
            try:
                claims = verify(auth[len(prefix):])
            except Exception as error:  # the test prints why
                self.reply(403, {"code": "TokenInvalid", "message": str(error)})
                return
            self.reply(200, {"user_id": claims["sub"], "info": {"client_id": claims["client_id"]}})
        else:
            self.reply(404, {"code": "NotFound", "message": base + self.path})


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = openeo.connect(f"http://127.0.0.1:{server.server_port}")
        connection.authenticate_oidc_client_credentials(
            client_id=os.environ["OPENEO_CLIENT_ID"],
            client_secret=os.environ["OPENEO_CLIENT_SECRET"],
            provider_id="slcs",
        )
        me = connection.describe_account()
        print(f"user_id={me['user_id']}")
        return 0
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
