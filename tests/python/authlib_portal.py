"""A portal built on Authlib signs a person in at slcs, unchanged.

Authlib's OAuth2Session (PKCE S256, client_secret_basic) runs the
authorization code flow against slcs's discovery document. A second
requests.Session plays the person in the browser: it follows the redirects,
reads the CSRF tokens from the real login and consent pages, and posts the
forms. Authlib then redeems the code, validates the ID token (signature from
/jwks, iss, aud, exp, nonce, at_hash) with its own JOSE implementation,
calls /userinfo, refreshes, and the access token obtains a certificate for a
CSR made with `cryptography`.

Environment: SLCS_TEST_ISSUER, PORTAL_CLIENT_SECRET, PORTAL_PASSWORD,
REQUESTS_CA_BUNDLE. Prints key=value lines and exits 0 on success.
"""

import os
import re
import sys
import urllib.parse
import warnings

# authlib.jose is deprecated in favour of joserfc but still Authlib's own
# OIDC validation path (CodeIDToken), which is what this test exercises.
warnings.filterwarnings("ignore", message=".*authlib.jose module is deprecated.*")

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER = os.environ["SLCS_TEST_ISSUER"]
CA = os.environ["REQUESTS_CA_BUNDLE"]
REDIRECT = "https://portal.example/cb"


def hidden(html: str, name: str) -> str:
    match = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    if not match:
        raise SystemExit(f"no hidden {name} in page:\n{html}")
    return match.group(1).replace("&#x2f;", "/").replace("&amp;", "&")


def play_the_person(url: str) -> str:
    """Signs in and approves; returns the redirect to the portal."""
    browser = requests.Session()
    browser.verify = CA
    response = browser.get(url, allow_redirects=False)
    for _ in range(8):
        if response.status_code == 303:
            location = response.headers["Location"]
            if location.startswith(REDIRECT):
                return location
            response = browser.get(urllib.parse.urljoin(ISSUER, location), allow_redirects=False)
        elif 'name="password"' in response.text:
            response = browser.post(
                f"{ISSUER}/login",
                data={
                    "csrf_token": hidden(response.text, "csrf_token"),
                    "continue": hidden(response.text, "continue"),
                    "username": "alice",
                    "password": os.environ["PORTAL_PASSWORD"],
                },
                allow_redirects=False,
            )
        elif 'name="decision"' in response.text:
            form = {
                "csrf_token": hidden(response.text, "csrf_token"),
                "request": hidden(response.text, "request"),
                "decision": "approve",
            }
            for delegatee in re.findall(r'name="(delegatee\.[^"]+)"', response.text):
                form[delegatee] = "on"
            response = browser.post(f"{ISSUER}/authorize/consent", data=form, allow_redirects=False)
        else:
            raise SystemExit(f"unexpected page {response.status_code}:\n{response.text}")
    raise SystemExit("never sent back to the portal")


def main() -> None:
    metadata = requests.get(f"{ISSUER}/.well-known/openid-configuration", verify=CA, timeout=10).json()
    assert metadata["issuer"] == ISSUER, metadata["issuer"]
    assert "S256" in metadata["code_challenge_methods_supported"]

    client = OAuth2Session(
        client_id="portal",
        client_secret=os.environ["PORTAL_CLIENT_SECRET"],
        scope="openid profile email offline_access slcs:certificate",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    client.verify = CA
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    back = play_the_person(url)
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
    assert answer["iss"] == ISSUER, answer  # RFC 9207
    token = client.fetch_token(
        metadata["token_endpoint"],
        authorization_response=back,
        state=state,
        code_verifier=verifier,
    )

    jwks = JsonWebKey.import_key_set(requests.get(metadata["jwks_uri"], verify=CA, timeout=10).json())
    claims = jwt.decode(
        token["id_token"],
        jwks,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": ISSUER}},
        claims_params={"nonce": nonce, "client_id": "portal", "access_token": token["access_token"]},
    )
    claims.validate()
    print(f"id_token_sub={claims['sub']}")
    print(f"id_token_name={claims['name']}")

    userinfo = client.get(metadata["userinfo_endpoint"]).json()
    assert userinfo["sub"] == claims["sub"], userinfo
    print(f"userinfo_email={userinfo['email']}")

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
    )
    issued = client.post(
        metadata["certificate_endpoint"],
        data={"certificate_request": csr.public_bytes(serialization.Encoding.PEM).decode()},
    )
    assert issued.status_code == 200, issued.text
    certificate = x509.load_pem_x509_certificate(issued.content)
    print(f"certificate_subject={certificate.subject.rfc4514_string()}")

    refreshed = client.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"], "rotated"
    print("refreshed=yes")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"assertion failed: {error}", file=sys.stderr)
        raise
