# shellcheck shell=bash
# Test-only certificates for the TLS + authentication cluster test: a CA, and per leaf a
# certificate for both the NATS server (clients, and other leaves' routes) and route
# clients (nats-server routes authenticate each other with certificates).
# Usage: bash make-certs.sh OUT_DIR LEAF_NAME...
#   -> OUT_DIR/ca.pem, OUT_DIR/<leaf>/cert.pem, OUT_DIR/<leaf>/key.pem
# Each leaf's certificate names the leaf, localhost (the service's own tls://localhost)
# and 127.0.0.1 (tests/cluster/tls-auth/check-local runs the leaves on loopback).
# Run at build time by ../tls-auth.nix (a runCommand with openssl): the keys are
# generated fresh for every build and land in the Nix store, which is fine for a test and
# never for a real deployment.
set -euo pipefail
out="$1"
shift
mkdir -p "$out"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$out/ca-key.pem" -out "$out/ca.pem" -days "$days" \
  -subj "/CN=policy-service cluster test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for leaf in "$@"; do
  mkdir -p "$out/$leaf"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/$leaf/key.pem" -out "$out/$leaf/req.pem" -subj "/CN=$leaf" 2>/dev/null
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:$leaf,DNS:localhost,IP:127.0.0.1" >"$out/$leaf/ext.cnf"
  openssl x509 -req -in "$out/$leaf/req.pem" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
    -CAcreateserial -out "$out/$leaf/cert.pem" -days "$days" -extfile "$out/$leaf/ext.cnf" 2>/dev/null
  rm "$out/$leaf/req.pem" "$out/$leaf/ext.cnf"
  openssl verify -CAfile "$out/ca.pem" "$out/$leaf/cert.pem" >/dev/null
done
# Nothing needs to sign anything later.
rm -f "$out/ca-key.pem" "$out/ca.srl"
