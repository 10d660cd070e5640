# checks.<linux>.cluster-tls-auth: lib.mkLeafClusterTest as a user with TLS and
# authentication would call it. Every leaf's NATS requires TLS from clients (certificates
# of a test CA) and a user name + password (bcrypt hashes in the server configuration);
# routes between leaves are TLS with certificates on both sides. The policy service
# connects with tls://localhost, the CA, and its own user and password file; the
# scenario's `nats` with the CA and an operator user's password file (`client`).
#
# TEST-ONLY SECRETS: the certificates and keys are generated at build time (./tls-auth/
# make-certs.sh in a runCommand) and so are in the Nix store, and the two passwords below
# are written into the store by environment.etc. That is acceptable for a throw-away VM
# test and never for a deployment: there, keys and passwords come from files outside the
# store (sops-nix, agenix, systemd credentials), exactly where this test puts its copies.
{ pkgs, mkLeafClusterTest }:
let
  leafNames = [
    "leaf1"
    "leaf2"
    "leaf3"
  ];
  certs = pkgs.runCommand "policy-service-cluster-test-certs" {
    nativeBuildInputs = [ pkgs.openssl ];
  } "bash ${./tls-auth/make-certs.sh} \"$out\" ${toString leafNames}";
  caFile = "${certs}/ca.pem";

  # Test-only passwords and their bcrypt hashes (`nats server passwd -p PASSWORD -c 10`);
  # tests/cluster/tls-auth/check-local proves each hash matches its password on a real
  # nats-server.
  servicePassword = "test-only-policy-service-password";
  servicePasswordHash = "$2a$10$UTj804THTMb9lWLd.pOI7.Bwg5ECqdqTvEJIwyKdbZscppqGb/pYi";
  operatorPassword = "test-only-operator-password";
  operatorPasswordHash = "$2a$10$XjpcfALzetap1FVWRIdk4O2YwbYacCQHAR3a0dL59LXz5jFZjpcSu";

  tlsAuthLeaf =
    { leaf, ... }:
    let
      serverTls = {
        cert_file = "${certs}/${leaf.name}/cert.pem";
        # Outside the store, readable by nats only, as a secrets manager would place it.
        key_file = "/etc/nats/tls/key.pem";
        ca_file = caFile;
        timeout = 5;
      };
    in
    {
      environment.etc = {
        "nats/tls/key.pem" = {
          source = "${certs}/${leaf.name}/key.pem";
          mode = "0400";
          user = "nats";
          group = "nats";
        };
        # Read by systemd (LoadCredential) for the service: root only.
        "policy-service/nats-password" = {
          text = servicePassword;
          mode = "0400";
        };
        # The operator's (the scenario's) password: root only.
        "nats-operator/password" = {
          text = operatorPassword;
          mode = "0400";
        };
      };

      services.nats = {
        # The server key is a file on the machine, absent from the build sandbox, so
        # `nats-server -t` cannot run at build time (nixpkgs' advice for such files).
        validateConfig = false;
        settings = {
          tls = serverTls;
          cluster = {
            tls = serverTls;
            # Routes only to the configured names: a gossiped IP address is not in the
            # certificates.
            no_advertise = true;
          };
          authorization.users = [
            {
              user = "policy-service";
              password = servicePasswordHash;
            }
            {
              user = "operator";
              password = operatorPasswordHash;
            }
          ];
        };
      };

      services.policy-service = {
        natsUrl = "tls://localhost:4222";
        tls.caFile = caFile;
        natsUser = "policy-service";
        passwordFile = "/etc/policy-service/nats-password";
      };
    };
in
mkLeafClusterTest {
  inherit pkgs;
  name = "policy-service-cluster-tls-auth";
  leafModules = [ tlsAuthLeaf ];
  client = {
    inherit caFile;
    user = "operator";
    passwordFile = "/etc/nats-operator/password";
  };
}
