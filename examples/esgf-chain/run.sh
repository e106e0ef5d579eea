#!/usr/bin/env bash
# The ESGF delegation chain (seed 004, MashMyData) end to end, against a
# fresh slcs on a loopback port:
#
#   Alice signs in at the Climate Portal and approves it, once, with the
#   chain it declares: portal -> WPS -> job brokers A and B.
#   The portal hands its token to the WPS; the WPS exchanges it (RFC 8693)
#   and shares a narrowed token with both brokers; each broker, as itself,
#   gets a short-lived certificate; an OPeNDAP-like mTLS relying party
#   (examples/relying_party.rs) accepts each and prints the chain it saw.
#
# Every party is a separate client with its own credentials; the browser
# part is curl with a cookie jar reading the CSRF tokens of the real pages.
# Needs: cargo, curl, openssl, python3. Run from the repository root:
#
#   examples/esgf-chain/run.sh
#
# It stops its servers and deletes its working directory on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${PORT:-18700}
RP_PORT=${RP_PORT:-18701}
ISSUER="https://localhost:$PORT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

say "building slcs and the relying party example"
cargo build --release --quiet --bin slcs --example relying_party
SLCS=target/release/slcs
RP=target/release/examples/relying_party

say "starting slcs on $ISSUER (fresh data directory, development CA)"
SLCS_OAUTH_ISSUER="$ISSUER" "$SLCS" --data-dir "$WORK/data" serve --listen "127.0.0.1:$PORT" \
  >"$WORK/slcs.out" 2>"$WORK/slcs.err" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "listening" "$WORK/slcs.out" 2>/dev/null && break; sleep 0.1; done
CA="$WORK/data/ca/ca.pem"
ADMIN=$(cat "$WORK/data/admin-token")
c() { curl -sS --cacert "$CA" "$@"; }

register() { # JSON body -> prints the client secret
  c -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    --data "$1" "$ISSUER/rest/v1/oidc/clients" | json 'd["client"]["secret"]'
}
service() { # id, name, delegatees (JSON list), exchange (true/false)
  register "{\"client\":{\"clientId\":\"$1\",\"name\":\"$2\",\"serviceAccountsEnabled\":true,
    \"defaultClientScopes\":[\"slcs:certificate\"]},
    \"slcs\":{\"delegatees\":$3,\"tokenExchangeEnabled\":$4}}"
}

say "registering the chain: portal -> wps -> broker-a, broker-b"
A_SECRET=$(service broker-a "Job broker A" '[]' false)
B_SECRET=$(service broker-b "Job broker B" '[]' false)
W_SECRET=$(service wps "Processing service (WPS)" '["broker-a","broker-b"]' true)
P_SECRET=$(register '{"client":{"clientId":"portal","name":"Climate Portal",
  "standardFlowEnabled":true,"consentRequired":true,"redirectUris":["https://portal.example/cb"],
  "defaultClientScopes":["openid","slcs:certificate"]},
  "slcs":{"delegatees":["wps"],"tokenExchangeEnabled":true}}')

say "creating Alice's account"
printf 'correct horse battery staple\n' >"$WORK/alice.pw"
chmod 600 "$WORK/alice.pw"
"$SLCS" --data-dir "$WORK/data" user add alice --display-name "Alice Martin" \
  --password-file "$WORK/alice.pw" --server "$ISSUER" --json | json 'd["sub"]'

say "Alice signs in at the portal and approves the chain (browser: curl with a cookie jar)"
b64url() { base64 | tr '+/' '-_' | tr -d '=\n'; }
VERIFIER=$(head -c 32 /dev/urandom | b64url)
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
JAR="$WORK/cookies"
browser() { c -b "$JAR" -c "$JAR" -o "$WORK/page.html" -w '%{http_code} %{redirect_url}\n' "$@"; }
hidden() { grep -o "name=\"$1\" value=\"[^\"]*\"" "$WORK/page.html" | head -1 | sed 's/.*value="//; s/"$//; s/&#x2f;/\//g'; }
read -r _ NEXT < <(browser "$ISSUER/authorize?response_type=code&client_id=portal&redirect_uri=https%3A%2F%2Fportal.example%2Fcb&scope=openid%20slcs%3Acertificate&state=s1&code_challenge=$CHALLENGE&code_challenge_method=S256")
browser "$NEXT" >/dev/null
read -r _ NEXT < <(browser --data-urlencode "csrf_token=$(hidden csrf_token)" \
  --data-urlencode "continue=$(hidden continue)" --data-urlencode username=alice \
  --data-urlencode "password=correct horse battery staple" "$ISSUER/login")
browser "$NEXT" >/dev/null
echo "consent page offers: $(grep -o 'name="delegatee\.[^"]*"' "$WORK/page.html" | sed 's/name="delegatee\.//; s/"//' | tr '\n' ' ')"
read -r _ BACK < <(browser --data-urlencode "csrf_token=$(hidden csrf_token)" \
  --data-urlencode "request=$(hidden request)" -d decision=approve \
  -d delegatee.wps=on -d delegatee.broker-a=on -d delegatee.broker-b=on "$ISSUER/authorize/consent")
CODE=$(python3 -c "import sys,urllib.parse; print(urllib.parse.parse_qs(urllib.parse.urlsplit(sys.argv[1]).query)['code'][0])" "$BACK")

token() { # client id, secret, form... -> access token
  local id=$1 secret=$2; shift 2
  c -u "$id:$secret" "$ISSUER/token" "$@" | json 'd.get("access_token") or sys.exit(str(d))'
}
EXCHANGE=(-d grant_type=urn:ietf:params:oauth:grant-type:token-exchange
  -d subject_token_type=urn:ietf:params:oauth:token-type:access_token)

say "the portal redeems the code (PKCE) and hands its token to the WPS"
T0=$(token portal "$P_SECRET" -d grant_type=authorization_code --data-urlencode "code=$CODE" \
  --data-urlencode redirect_uri=https://portal.example/cb -d "code_verifier=$VERIFIER")
T1=$(token portal "$P_SECRET" "${EXCHANGE[@]}" -d "subject_token=$T0" -d audience=wps)

say "the WPS exchanges it (becoming the actor) and shares a token with brokers A and B"
T2=$(token wps "$W_SECRET" "${EXCHANGE[@]}" -d "subject_token=$T1")
T3=$(token wps "$W_SECRET" "${EXCHANGE[@]}" -d "subject_token=$T2" -d audience=broker-a -d audience=broker-b)
python3 -c "import sys,json,base64; p=sys.argv[1].split('.')[1]; p+='='*(-len(p)%4); d=json.loads(base64.urlsafe_b64decode(p)); print(json.dumps({k: d[k] for k in ('client_id','aud','scope','act')}))" "$T3"

say "each broker, authenticating as itself, gets a certificate"
for broker in broker-a broker-b; do
  secret=$A_SECRET; [ "$broker" = broker-b ] && secret=$B_SECRET
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ignored" \
    -keyout "$WORK/$broker-key.pem" -out "$WORK/$broker.csr" 2>/dev/null
  c -H "Authorization: Bearer $T3" --data-urlencode "certificate_request@$WORK/$broker.csr" \
    --data-urlencode "client_id=$broker" --data-urlencode "client_secret=$secret" \
    "$ISSUER/certificate" >"$WORK/$broker.pem"
  openssl verify -CAfile "$CA" "$WORK/$broker.pem"
  "$SLCS" inspect "$WORK/$broker.pem" | grep 'chain:'
done

say "an OPeNDAP-like relying party (mTLS, trusts only the slcs CA) reads the chain"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost" -keyout "$WORK/rp-key.pem" -out "$WORK/rp.pem" 2>/dev/null
"$RP" --ca "$CA" --cert "$WORK/rp.pem" --key "$WORK/rp-key.pem" --listen "127.0.0.1:$RP_PORT" \
  >"$WORK/rp.out" 2>"$WORK/rp.err" &
PIDS+=($!)
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$RP_PORT") 2>/dev/null && break; sleep 0.1; done
for broker in broker-a broker-b; do
  curl -sS --cacert "$WORK/rp.pem" --cert "$WORK/$broker.pem" --key "$WORK/$broker-key.pem" \
    "https://localhost:$RP_PORT/whoami" | json '"%s saw: %s (presented by %s)" % ("relying party", d["summary"], d["presenter"])'
done

say "cascade: the WPS revokes its token; the brokers' certificates are revoked, the portal's token is not"
c -u "wps:$W_SECRET" -d "token=$T2" "$ISSUER/revoke" -o /dev/null
SERIAL=$("$SLCS" inspect --json "$WORK/broker-a.pem" | json 'd["serial"]')
c -H "Authorization: Bearer $ADMIN" "$ISSUER/certificate/status/$SERIAL" | json '"broker-a certificate: " + d["status"]'
c -u "portal:$P_SECRET" -d "token=$T0" "$ISSUER/introspect" | json '"portal token active: %s" % d["active"]'
echo
echo "done"
