#!/usr/bin/env bash
# Peer benchmark: step-ca (smallstep certificates) certificates/s, built from
# Debian bookworm's Go sources, measured the way scripts/bench-certificates
# measures slcs's POST /certificate.
#
#   scripts/peers/step-ca.sh [seconds] [connections]
#     seconds      length of each wrk run (default 10)
#     connections  comma-separated connection counts, one run each
#                  (default 16,64; `16` for the short run)
#   PEERS_CACHE    cache dir (default ~/.cache/slcs-peers): the binary goes to
#                  $PEERS_CACHE/step-ca/step-ca, the PyJWT venv beside it
#   TOKENS         request bodies minted per run (default max(25000, 2500 x seconds))
#   BUILD_TIMEOUT  seconds allowed for the Go build (default 1800)
# Prints a Markdown table on stdout; diagnostics go to stderr.
#
# Build. Debian ships step-ca 0.19.0 only as a library
# (golang-github-smallstep-certificates-dev; 0.19.0-1 dropped the binary
# package and its sources lack cmd/step-ca), its dependencies as Debian
# golang-*-dev packages. The script installs them (apt-get) if missing and
# builds offline in GOPATH mode (GO111MODULE=off, GOPATH=<tmp>:/usr/share/gocode,
# GOPROXY=off) a 20-line main that runs the library's own step-ca command,
# commands.AppCommand (config loading, ca.New, Run: what upstream's
# cmd/step-ca runs). All server code is Debian's. Upstream's main also links
# the optional cloud/HSM KMS and CAS back-ends, unused here (file keys, the
# built-in soft CAS). The binary is cached; later runs skip the build.
#
# Configuration (ca.json written by hand; Debian has no `step` CLI package):
# - a P-256 root and a P-256 intermediate made with openssl; the intermediate
#   key is unencrypted PKCS#8, so no password file;
# - HTTPS on 127.0.0.1:<free port>, dnsNames ["127.0.0.1"]; step-ca issues its
#   own server certificate from the intermediate at start (the same CA);
#   default TLS options (TLS 1.2-1.3, ECDHE-ECDSA AEAD suites);
# - db: badgerv2 in the work dir, the type `step ca init` writes (step-ca's
#   default). Debian's badger (2.2007) defaults to SyncWrites=true: its
#   value log (the write-ahead log) is opened O_DSYNC, so every commit batch
#   is on disk before the transaction returns (concurrent commits share a
#   write). Per certificate step-ca commits the used token's jti and the
#   certificate;
# - one JWK provisioner "bench" holding only the public P-256 JWK (kid = its
#   RFC 7638 thumbprint). The server never needs the private key, so there is
#   no "encryptedKey" (that field only serves `step ca token` clients); the
#   tokens are signed locally by step-ca-tokens.py (PyJWT in a cached venv);
# - logger format text: step-ca logs every request at info (it has no level
#   switch), to a file in the work dir.
#
# Load (before the clock starts): a pool of 512 P-256 CSRs from openssl
# (CN = SAN = bench-<i>.step.test), then, per run, TOKENS fresh request
# bodies {"csr": PEM, "ott": JWT}: one-time tokens as `step ca token` makes
# them (ES256, iss = provisioner, aud = https://127.0.0.1:<port>/1.0/sign,
# sub = CN, sans = [CN], unique jti, 5 min). step-ca refuses a reused jti, so
# the wrk Lua script hands each body out once (the two wrk threads take
# alternate lines); if they run out it wraps and says so on stderr (the
# reused tokens then show up as non-2xx).
# Each run: wrk -t2 -c<n> -d<seconds> --latency over HTTPS keep-alive,
# POST /1.0/sign, Content-Type: application/json. Server CPU per certificate
# from /proc/<pid>/stat (utime+stime) before and after, divided by the
# answers (= certificates while non-2xx is 0), peak RSS from
# /proc/<pid>/status VmHWM (over the server's life, so the 64 row includes
# the 16 run), non-2xx from wrk's count. The runs share one server, as in
# bench-certificates.
#
# Against slcs's scripts/bench-certificates: same client (wrk -t2, HTTPS
# keep-alive, 16 and 64 connections, fixed duration), same CSR pool (512
# P-256 CSRs made before the clock), P-256 CA, a durable store written per
# certificate (slcs: sled with a flush per write; step-ca: badger with
# O_DSYNC writes). Differences: the caller's credential
# (slcs: one OAuth bearer token reused; step-ca: a fresh one-time JWT per
# certificate, as step-ca requires, so both verify one ES256 signature on a
# token per request), the request format (form-encoded vs JSON), and
# request logging (slcs runs at warn, step-ca logs each request); step-ca
# issues its default 24 h leaf with the SANs of the token.
#
# Bounded: every wrk run has a fixed duration (and a `timeout`), the build a
# timeout, the server's start a 30 s wait; an EXIT trap stops the server and
# removes the mktemp -d work dir. Listens on 127.0.0.1 only.
set -euo pipefail
SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-16,64}
here=$(cd "$(dirname "$0")" && pwd)
cache=${PEERS_CACHE:-$HOME/.cache/slcs-peers}/step-ca
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
TOKENS=${TOKENS:-$(( SECONDS_PER_RUN * 2500 > 25000 ? SECONDS_PER_RUN * 2500 : 25000 ))}
POOL=512
SRC=/usr/share/gocode/src/github.com/smallstep/certificates
log() { echo "step-ca.sh: $*" >&2; }
t0=$(date +%s)

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

apt_install() {
  [ "$(id -u)" = 0 ] || { log "missing Debian packages: $*; install them as root (apt-get install $*)"; exit 1; }
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >"$work/apt.log" 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$work/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >>"$work/apt.log" 2>&1
  } || { tail -20 "$work/apt.log" >&2; exit 1; }
}
command -v wrk >/dev/null || apt_install wrk
command -v openssl >/dev/null || apt_install openssl
command -v curl >/dev/null || apt_install curl

# 1. The binary: build once, then reuse.
mkdir -p "$cache"
bin="$cache/step-ca"
if [ ! -x "$bin" ] || [ ! -s "$cache/step-ca.version" ]; then
  { command -v go >/dev/null && [ -d "$SRC/commands" ]; } ||
    apt_install golang-go golang-github-smallstep-certificates-dev
  version=$(dpkg-query -W -f='${Version}' golang-github-smallstep-certificates-dev)
  gopath="$work/gopath"
  mkdir -p "$gopath/src/slcs-peers/step-ca"
  cat >"$gopath/src/slcs-peers/step-ca/main.go" <<GO
// step-ca's entry point for Debian's library-only package: runs the
// library's own start command (commands.AppCommand).
package main

import (
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
)

func main() {
	app := cli.NewApp()
	app.Name = "step-ca"
	app.Version = "$version (Debian golang-github-smallstep-certificates-dev)"
	app.Usage = "step-ca <ca.json> [--password-file=<file>]"
	app.Flags = commands.AppCommand.Flags
	app.Action = commands.AppCommand.Action
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
GO
  log "building step-ca $version offline (GOPATH mode, timeout ${BUILD_TIMEOUT}s)"
  b0=$(date +%s)
  if ! (cd "$gopath" && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOPROXY=off GOFLAGS= \
        GOCACHE="$work/gocache" CGO_ENABLED=1 \
        timeout "$BUILD_TIMEOUT" go build -o "$bin.tmp" slcs-peers/step-ca) >"$work/build.log" 2>&1; then
    grep -v 'deprecated\|cgo-gcc-prolog\|zstd.h\|^ *[0-9]* |\|^ *|\|In file included' "$work/build.log" >&2 || true
    log "the Go build failed (missing imports above: find their package with apt-file search <import path>)"
    exit 1
  fi
  mv "$bin.tmp" "$bin"
  echo "${version%-*}" >"$cache/step-ca.version"
  log "built $bin in $(( $(date +%s) - b0 )) s"
fi
version=$(cat "$cache/step-ca.version")

# The token minter's venv.
venv="$cache/venv"
if ! "$venv/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  log "creating $venv (pyjwt[crypto])"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'pyjwt[crypto]>=2,<3' >&2
fi

# 2. The CA, the provisioner and ca.json.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ca="$work/ca"; mkdir -p "$ca"
p256() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
p256 "$ca/root.key"; p256 "$ca/intermediate.key"; p256 "$ca/provisioner.key"
openssl req -new -x509 -sha256 -days 3650 -key "$ca/root.key" -out "$ca/root.crt" \
  -subj "/O=slcs bench/CN=slcs bench step-ca Root CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:1" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -sha256 -key "$ca/intermediate.key" -out "$ca/intermediate.csr" \
  -subj "/O=slcs bench/CN=slcs bench step-ca Intermediate CA" 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:TRUE,pathlen:0" "keyUsage=critical,keyCertSign,cRLSign" \
  "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$ca/intermediate.ext"
openssl x509 -req -sha256 -days 3650 -in "$ca/intermediate.csr" -CA "$ca/root.crt" -CAkey "$ca/root.key" \
  -CAcreateserial -extfile "$ca/intermediate.ext" -out "$ca/intermediate.crt" 2>/dev/null
jwk=$("$venv/bin/python" "$here/step-ca-tokens.py" jwk "$ca/provisioner.key")
cat >"$ca/ca.json" <<JSON
{
  "root": "$ca/root.crt",
  "crt": "$ca/intermediate.crt",
  "key": "$ca/intermediate.key",
  "address": "127.0.0.1:$port",
  "dnsNames": ["127.0.0.1"],
  "logger": {"format": "text"},
  "db": {"type": "badgerv2", "dataSource": "$work/db"},
  "authority": {
    "provisioners": [
      {"type": "JWK", "name": "bench", "key": $jwk}
    ]
  }
}
JSON

# 3a. The CSR pool (P-256, openssl), before any clock starts.
log "making $POOL P-256 CSRs"
mkdir -p "$work/csrs"
for i in $(seq 0 $((POOL - 1))); do
  cn="bench-$i.step.test"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=$cn" -addext "subjectAltName=DNS:$cn" -out "$work/csrs/$cn.pem" 2>/dev/null
done

# Start step-ca.
log "starting step-ca $version on 127.0.0.1:$port"
STEPPATH="$work/steppath" "$bin" "$ca/ca.json" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  curl -sf --cacert "$ca/root.crt" "https://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { tail -20 "$work/server.log" >&2; log "step-ca exited"; exit 1; }
  sleep 0.1
done
curl -sf --cacert "$ca/root.crt" "https://127.0.0.1:$port/health" >/dev/null ||
  { tail -20 "$work/server.log" >&2; log "step-ca did not come up in 30 s"; exit 1; }

# One certificate by hand: the token format and the chain are right.
"$venv/bin/python" "$here/step-ca-tokens.py" mint "$ca/provisioner.key" bench \
  "https://127.0.0.1:$port/1.0/sign" "$work/csrs" 1 "$work/probe.json"
code=$(curl -s -o "$work/probe.out" -w '%{http_code}' --cacert "$ca/root.crt" \
  -H 'Content-Type: application/json' --data-binary @"$work/probe.json" "https://127.0.0.1:$port/1.0/sign")
[ "$code" = 201 ] || { log "probe POST /1.0/sign answered $code: $(head -c 400 "$work/probe.out")"; exit 1; }
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["crt"], end="")' "$work/probe.out" >"$work/probe.crt"
openssl verify -CAfile "$ca/root.crt" -untrusted "$ca/intermediate.crt" "$work/probe.crt" >/dev/null ||
  { log "the probe certificate does not verify"; exit 1; }
log "probe: 201, $(openssl x509 -in "$work/probe.crt" -noout -subject -ext subjectAltName 2>/dev/null | tr '\n' ' ')"

# The wrk script: each thread takes alternate lines of the bodies file and
# sends each once; on running out it wraps (and reports it).
cat >"$work/sign.lua" <<'LUA'
local threads, next_id = {}, 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  local file, n = args[1], tonumber(args[2])
  bodies, idx, wrapped = {}, 0, 0
  local i = 0
  for line in io.lines(file) do
    if i % n == tid then bodies[#bodies + 1] = line end
    i = i + 1
  end
  headers = { ["Content-Type"] = "application/json" }
end
function request()
  idx = idx + 1
  if idx > #bodies then idx, wrapped = 1, wrapped + 1 end
  return wrk.format("POST", "/1.0/sign", headers, bodies[idx])
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local w = t:get("wrapped")
    if w and w > 0 then io.stderr:write("step-ca.sh: thread ran out of bodies, reused them (", w, "x)\n") end
  end
end
LUA

# 4-5. The runs.
hz=$(getconf CLK_TCK)
echo "| peer | connections | certificates/s | p50 | p99 | server CPU per certificate | peak RSS | non-2xx |"
echo "|---|---|---|---|---|---|---|---|"
for c in ${CONNECTIONS//,/ }; do
  m0=$(date +%s.%N)
  "$venv/bin/python" "$here/step-ca-tokens.py" mint "$ca/provisioner.key" bench \
    "https://127.0.0.1:$port/1.0/sign" "$work/csrs" "$TOKENS" "$work/bodies.jsonl"
  log "minted $TOKENS bodies in $(python3 -c "import time; print('%.1f' % (time.time() - $m0))") s; wrk -t2 -c$c -d${SECONDS_PER_RUN}s"
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(timeout $((SECONDS_PER_RUN + 60)) wrk -t2 -c"$c" -d"${SECONDS_PER_RUN}s" --latency -s "$work/sign.lua" \
    "https://127.0.0.1:$port/1.0/sign" -- "$work/bodies.jsonl" 2)
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  echo "$out" | grep -E 'requests in|Requests/sec|Non-2xx|Socket errors' | sed 's/^/step-ca.sh:   /' >&2 || true
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); bad=${bad:-0}
  per=$(python3 -c "print('%.0f µs' % (($after - $before) / $hz / max($total, 1) * 1e6))")
  # Certificates, not answers: a non-2xx answer issued nothing.
  certs=$(python3 -c "print('%.0f' % ($rps * ($total - $bad) / max($total, 1)))")
  rss=$(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status")
  [ "$total" -le "$TOKENS" ] || log "more requests ($total) than minted bodies ($TOKENS): raise TOKENS"
  echo "| step-ca $version (JWK OTT, P-256 CA) | $c | $certs | $p50 | $p99 | $per | $rss | $bad |"
done
errors=$(grep -c 'level=error\|status=4\|status=5' "$work/server.log" || true)
log "server log: $(wc -l <"$work/server.log") lines, $errors error/4xx/5xx lines; wall time $(( $(date +%s) - t0 )) s"
