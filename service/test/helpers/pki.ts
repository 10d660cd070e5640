/**
 * Test PKI made with the real `openssl` command (no key material is committed):
 *
 *   const pki = makePki(dir);       // CA, server cert (SAN localhost + 127.0.0.1), client cert (CN policy-service)
 *   pki.ca / pki.serverCert / pki.serverKey / pki.clientCert / pki.clientKey   (file paths, keys mode 0600)
 *   pki.clientSubject                // the client certificate's subject as nats-server's verify_and_map sees it
 *   makeCa(dir, "other-ca")          // an unrelated CA, to show that a wrong NATS_CA_FILE is refused
 *   makeClientCert(dir, ca, "name")  // another client certificate signed by `ca`
 *   makeServerCert(dir, ca, "name", ["DNS:other.example"])   // a server certificate for other names
 *
 * Throws with an install hint when openssl is missing (scripts/test installs it; Debian: apt-get install -y openssl).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface CertificateAuthority { name: string; cert: string; key: string }
export interface Pki {
  ca: CertificateAuthority;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** RFC 2253 subject of the client certificate (the user name nats-server maps it to). */
  clientSubject: string;
}

function openssl(args: string[], cwd: string): string {
  const out = spawnSync("openssl", args, { cwd, encoding: "utf8", timeout: 20_000 });
  if (out.error && (out.error as NodeJS.ErrnoException).code === "ENOENT") {
    throw new Error("openssl not found: the TLS tests generate their certificates with it (Debian: apt-get install -y openssl)");
  }
  if (out.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${out.stderr}`);
  return out.stdout;
}

/** A P-256 key in PKCS#8 PEM, mode 0600. */
function newKey(dir: string, file: string): string {
  const path = join(dir, file);
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path], dir);
  chmodSync(path, 0o600);
  return path;
}

export function makeCa(dir: string, name = "policy-test-ca"): CertificateAuthority {
  const key = newKey(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}.pem`);
  openssl([
    "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  return { name, cert, key };
}

function signedCert(dir: string, ca: CertificateAuthority, name: string, subject: string, extensions: string[]): { cert: string; key: string } {
  const key = newKey(dir, `${name}-key.pem`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment", ...extensions].join("\n") + "\n");
  openssl(["req", "-new", "-key", key, "-out", csr, "-subj", subject], dir);
  openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext], dir);
  return { cert, key };
}

/**
 * A server certificate for `localhost` and 127.0.0.1 (subjectAltName: clients verify names there, not in the CN),
 * or for the names given (e.g. ["DNS:other.example"], to show a host missing from the certificate is refused).
 */
export function makeServerCert(dir: string, ca: CertificateAuthority, name = "server", altNames = ["DNS:localhost", "IP:127.0.0.1"]): { cert: string; key: string } {
  return signedCert(dir, ca, name, "/CN=localhost", [`subjectAltName=${altNames.join(",")}`, "extendedKeyUsage=serverAuth"]);
}

/** A client certificate with subject `O=policy-test, CN=<commonName>`. */
export function makeClientCert(dir: string, ca: CertificateAuthority, commonName: string): { cert: string; key: string; subject: string } {
  const made = signedCert(dir, ca, `client-${commonName}`, `/O=policy-test/CN=${commonName}`, ["extendedKeyUsage=clientAuth"]);
  return { ...made, subject: `CN=${commonName},O=policy-test` };
}

export function makePki(dir: string): Pki {
  const ca = makeCa(dir);
  const server = makeServerCert(dir, ca);
  const client = makeClientCert(dir, ca, "policy-service");
  return { ca, serverCert: server.cert, serverKey: server.key, clientCert: client.cert, clientKey: client.key, clientSubject: client.subject };
}
