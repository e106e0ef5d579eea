#!/usr/bin/env bash
# Peer benchmark: Debian's myproxy-server (6.2) as an online CA, to set its
# certificates/s beside slcs's POST /certificate (scripts/bench-certificates).
#   scripts/peers/myproxy.sh [seconds] [concurrency]
# (or the environment: SECONDS_PER_RUN, default 10; CONCURRENCY, default 16).
# Run as root: it may apt-get install myproxy-server and myproxy, and it
# adds a throwaway system user (removed on exit). Prints a Markdown header
# and one table row on stdout; diagnostics go to stderr.
#
# How myproxy-server is configured (all files in a mktemp -d directory):
# - A throwaway CA with an EC P-256 key. myproxy's CA code signs with it
#   (ecdsa-with-SHA256), so no RSA CA key is needed. But it only signs RSA
#   public keys: a P-256 CSR is refused ("Public key in certificate request
#   is not of type RSA"), so the client's CSR is RSA-2048, where slcs's
#   benchmark sends P-256 CSRs.
# - A host certificate for localhost (P-256, like slcs's TLS certificate),
#   signed by that CA; X509_CERT_DIR holds the CA as <hash>.0 with a Globus
#   <hash>.signing_policy, for the server and the client alike.
# - myproxy-server.config: certificate_issuer_cert/_key (online CA), a
#   certificate_mapfile mapping the user to its DN, authorized/default
#   retrievers and accepted_credentials "*", and pam "sufficient". Debian
#   ships no /etc/pam.d/myproxy, so PAM uses /etc/pam.d/other: pam_unix
#   checks the user's SHA-512-crypt password (login.defs' ENCRYPT_METHOD),
#   a deliberately slow hash: perf put about a third of the server's CPU
#   in libcrypt, a quarter in libcrypto (mostly OpenSSL set-up in each
#   forked child, not signing) and a fifth in the kernel (fork, page faults).
# - myproxy-server has no quiet foreground mode (-d serves one connection),
#   so it runs as a daemon on 127.0.0.1, port 0, and reports its pid (-P)
#   and port (-z). It logs to syslog: nothing where /dev/log is absent
#   (containers); elsewhere the syslog daemon's CPU is not counted.
#
# What is the same as slcs's benchmark: TLS on loopback with a P-256
# localhost certificate, a P-256 CA, a pre-made CSR (no key generation
# while timing: myproxy-logon -Q sends it; without -Q myproxy-logon makes
# an RSA-2048 key per logon, a client-side cost that leaves server CPU
# alone), a fixed number of requests in flight for a fixed time, server CPU
# from /proc/<pid>/stat. What is not:
# - one TCP connection, full TLS handshake and GSI exchange per certificate
#   (no keep-alive, no session resumption); the server forks a child per
#   connection. slcs's wrk keeps its connections open.
# - a username and password checked by PAM per certificate, where slcs
#   verifies a bearer token (an ES256 JWT).
# - the client is a myproxy-logon process started per request, on the same
#   two cores as the server; slcs's client is wrk.
# - myproxy keeps only a serial-number file; slcs writes a durable
#   (fsynced) issuance record before it answers.
# - lifetimes are in hours: -t 1 asks for 1 h (myproxy backdates 5 min).
# Server CPU per certificate: utime+stime+cutime+cstime of the daemon
# (children are counted once reaped, so the script waits for that) over
# the run, divided by the certificates issued. Latency: each request's
# wall time, myproxy-logon's start-up included. Bounded: no request starts
# after the deadline and each is killed after 30 s.
set -euo pipefail
SECONDS_PER_RUN=${1:-${SECONDS_PER_RUN:-10}}
CONCURRENCY=${2:-${CONCURRENCY:-16}}
[[ $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ && $CONCURRENCY =~ ^[1-9][0-9]*$ ]] ||
  { echo "usage: $0 [seconds] [concurrency]" >&2; exit 2; }
export LC_ALL=C # EPOCHREALTIME's decimal point
# A credential in the environment would make the client authenticate with it.
unset X509_USER_PROXY X509_USER_CERT X509_USER_KEY MYPROXY_SERVER MYPROXY_SERVER_DN

if ! command -v myproxy-server >/dev/null || ! command -v myproxy-logon >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q myproxy-server myproxy >&2
fi
version=$(myproxy-server -V | sed -n 's/.*(v\([0-9.]*\) .*/\1/p')

work=$(mktemp -d)
user=slcsmpx$$
pass=$(openssl rand -hex 12)
pid= user_made= workers=()
cleanup() {
  [ ${#workers[@]} -gt 0 ] && kill "${workers[@]}" 2>/dev/null
  wait 2>/dev/null
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  [ -n "$user_made" ] && userdel "$user" 2>/dev/null
  rm -rf "$work"
}
trap 'cleanup || true' EXIT
cd "$work"

# The CA, its trust directory, the host certificate and the client's CSR.
p256() { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }
p256 -x509 -days 2 -keyout ca.key -out ca.pem -subj "/O=slcs bench/CN=myproxy bench CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
mkdir certs
hash=$(openssl x509 -hash -noout -in ca.pem)
cp ca.pem "certs/$hash.0"
cat >"certs/$hash.signing_policy" <<'EOF'
access_id_CA X509 '/O=slcs bench/CN=myproxy bench CA'
pos_rights globus CA:sign
cond_subjects globus '"/O=slcs bench/*"'
EOF
p256 -keyout host.key -out host.csr -subj "/O=slcs bench/CN=localhost"
openssl x509 -req -in host.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out host.pem \
  -extfile <(printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n') 2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=ignored" 2>/dev/null
chmod 600 ./*.key
export X509_CERT_DIR=$work/certs

# The user whose password PAM checks, and the DN its certificates get.
useradd -M -N -s /usr/sbin/nologin -p "$(openssl passwd -6 "$pass")" "$user"
user_made=1
printf '"/O=slcs bench/CN=%s" %s\n' "$user" "$user" >grid-mapfile

mkdir -m 700 store
cat >myproxy-server.config <<EOF
accepted_credentials "*"
authorized_retrievers "*"
default_retrievers "*"
pam "sufficient"
certificate_issuer_cert $work/ca.pem
certificate_issuer_key $work/ca.key
certificate_mapfile $work/grid-mapfile
certificate_serialfile $work/serial
max_cert_lifetime 1
EOF
X509_USER_CERT=$work/host.pem X509_USER_KEY=$work/host.key \
  myproxy-server -c "$work/myproxy-server.config" -s "$work/store" -l 127.0.0.1 -p 0 \
  -P "$work/pid" -z "$work/port"
for _ in $(seq 50); do [ -s pid ] && [ -s port ] && break; sleep 0.1; done
pid=$(cat pid) port=$(cat port)
# It logs to syslog only: run it by hand with -d to see why it would not start.
[ -n "$pid" ] && [ -d "/proc/$pid" ] || { echo "myproxy-server did not start" >&2; exit 1; }

logon() { # $1: output file
  timeout 30 myproxy-logon -s localhost -p "$port" -l "$user" -S -q -t 1 -Q client.csr -o "$1" <<<"$pass"
}
# One certificate before the clock starts: the setup works, and the CA
# really signs with its P-256 key.
logon warmup.pem >/dev/null
openssl verify -CAfile ca.pem warmup.pem >&2
echo "myproxy-server $version, pid $pid, 127.0.0.1:$port; issued $(openssl x509 -in warmup.pem -noout -subject)," \
  "$(openssl x509 -in warmup.pem -noout -text | grep -m1 -o 'Signature Algorithm: .*')" >&2

hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat"; }
worker() { # appends "<exit status> <latency µs>" per request to lat.$1
  local t0 t1 rc
  while t0=${EPOCHREALTIME/./}; ((t0 < deadline)); do
    rc=0
    logon "out.$1" >/dev/null 2>>client.err || rc=$?
    t1=${EPOCHREALTIME/./}
    echo "$rc $((t1 - t0))" >>"lat.$1"
  done
}
before=$(cpu)
start=${EPOCHREALTIME/./}
deadline=$((start + SECONDS_PER_RUN * 1000000))
for i in $(seq "$CONCURRENCY"); do worker "$i" & workers+=($!); done
wait "${workers[@]}"
workers=()
end=${EPOCHREALTIME/./}
# Children count in cutime/cstime only once the daemon has reaped them.
for _ in $(seq 100); do pgrep -P "$pid" >/dev/null || break; sleep 0.05; done
after=$(cpu)

cat lat.* >all
ok=$(awk '$1 == 0' all | wc -l)
failures=$(awk '$1 != 0' all | wc -l)
[ "$failures" -eq 0 ] || { echo "$failures failed requests; client errors:" >&2; sort client.err | uniq -c | sort -rn | head >&2; }
[ "$ok" -gt 0 ] || { echo "no certificate was issued" >&2; exit 1; }
awk '$1 == 0 {print $2}' all | sort -n >latencies
pct() { # nearest rank
  awk -v q="$1" -v n="$ok" 'BEGIN {r = int(q * n); if (r < q * n) r++} NR == r {printf "%.1fms", $1 / 1000}' latencies
}
rate=$(awk -v n="$ok" -v us=$((end - start)) 'BEGIN {printf "%.1f", n / (us / 1e6)}')
per=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$ok" 'BEGIN {printf "%.0f µs", t / hz / n * 1e6}')
echo "$ok certificates in $(((end - start) / 1000)) ms; server CPU $((after - before)) ticks at $hz/s" >&2

echo "| peer | connections | certificates/s | p50 | p99 | server CPU per certificate | failures |"
echo "|---|---|---|---|---|---|---|"
echo "| myproxy-server $version (online CA, EC P-256 CA key) | $CONCURRENCY | $rate | $(pct 0.50) | $(pct 0.99) | $per | $failures |"
