# lib.mkLeafClusterTest offline: every node of both of our calls (checks.*-linux.cluster,
# tests/cluster.nix; checks.*-linux.cluster-tls-auth, tests/cluster/tls-auth.nix) through
# the NixOS stand-in, what the scenario is told about each leaf, a user's own host names,
# and the refusals (leaf count, unknown client keys, a replica count that leaves a leaf
# without its replica). The VM runs themselves happen in the GitHub workflow.
{
  lib,
  repo,
  flake,
  check,
  standIn,
  ...
}:
let
  calls = import (repo + "/tests/cluster/eval-calls.nix") { inherit lib repo; };
  inherit (calls) cluster;
  tlsAuth = calls.tls-auth;
  leafNames = [
    "leaf1"
    "leaf2"
    "leaf3"
  ];
  environmentOf =
    call:
    call.test.passthru.scenarioEnvironment {
      config = call.nodes.leaf2;
      inherit (call) nodes;
    };
  # A user's call of the library, evaluated the same way.
  userCall =
    args:
    calls.evalTest (
      calls.mkLeafClusterTest (
        {
          inherit (calls) pkgs;
        }
        // args
      )
    );
  renamed = userCall {
    leaves = 5;
    leafModules = [
      (
        { leaf, ... }:
        {
          networking.hostName = "policy-${toString leaf.number}";
          networking.domain = "example.net";
          services.nats.port = 4333;
        }
      )
    ];
  };
  renamedEnvironment = environmentOf renamed;
  everyNode = call: f: lib.all (name: f call.nodes.${name}) (lib.attrNames call.nodes);
in
if !standIn then
  {
    "leaf cluster test calls" = {
      skip = "evaluated offline only; nix flake check evaluates (and builds) the real runNixOSTest";
    };
  }
else
  {
    "flake exports lib.mkLeafClusterTest (a function)" =
      check.isTrue (builtins.isFunction flake.lib.mkLeafClusterTest) "flake.lib.mkLeafClusterTest is not a function";

    "cluster: nodes leaf1..leaf3, each evaluates with no failed assertion" = check.eq (lib.mapAttrs (
      _: config: check.failedAssertions config
    ) cluster.nodes) (lib.genAttrs leafNames (_: [ ]));

    "cluster: our example leaves are what the seed describes (names, routes, R3, plain NATS)" =
      check.eq
        (lib.mapAttrs (_: r: {
          inherit (r) hostName;
          inherit (r.natsSettings) server_name;
          routes = r.natsSettings.cluster.routes;
          replicas = r.serviceEnvironment.STREAM_REPLICAS;
          url = r.serviceEnvironment.NATS_URL;
        }) cluster.runtime)
        (
          lib.genAttrs leafNames (name: {
            hostName = name;
            server_name = name;
            routes = map (n: "nats://${n}:6222") leafNames;
            replicas = "3";
            url = "nats://localhost:4222";
          })
        );

    "cluster: the scenario is told each leaf's URL, monitor and server name" =
      check.hasAll (environmentOf cluster)
        {
          LEAF_COUNT = "3";
          LEAF1_URL = "nats://leaf1:4222";
          LEAF3_URL = "nats://leaf3:4222";
          LEAF2_MONITOR = "http://leaf2:8222";
          LEAF1_NAME = "leaf1";
          STREAM_NAME = "POLICY_EVENTS";
          STREAM_REPLICAS = "3";
          SERVICE_USER = "policy-service";
        };

    "cluster: the scenario command carries those defaults and the scenario itself" =
      let
        text = (cluster.scenarioCommand "leaf1").text;
      in
      check.isTrue (
        lib.hasInfix "export LEAF1_URL=\${LEAF1_URL-nats://leaf1:4222}\n" text
        && lib.hasInfix "step_caught_up() {" text
      ) "cluster-scenario text lacks the LEAF1_URL default or the scenario";

    "cluster-tls-auth: nodes leaf1..leaf3, each evaluates with no failed assertion" = check.eq (
      lib.mapAttrs
      (_: config: check.failedAssertions config)
      tlsAuth.nodes
    ) (lib.genAttrs leafNames (_: [ ]));

    "cluster-tls-auth: NATS requires TLS from clients and routes, and passwords (bcrypt)" =
      check.isTrue
        (everyNode tlsAuth (
          config:
          let
            s = config.services.nats.settings;
          in
          s.tls.key_file == "/etc/nats/tls/key.pem"
          && lib.hasSuffix "/ca.pem" s.tls.ca_file
          && s.cluster.tls.cert_file == s.tls.cert_file
          && s.cluster.no_advertise
          &&
            map (u: u.user) s.authorization.users == [
              "policy-service"
              "operator"
            ]
          && lib.all (u: lib.hasPrefix "$2a$" u.password) s.authorization.users
          && !config.services.nats.validateConfig
        ))
        "a leaf's NATS settings lack TLS, route TLS or bcrypt users";

    "cluster-tls-auth: each leaf has its own certificate" = check.eq (lib.mapAttrs (
      _: config: lib.last (lib.init (lib.splitString "/" config.services.nats.settings.tls.cert_file))
    ) tlsAuth.nodes) (lib.genAttrs leafNames (name: name));

    "cluster-tls-auth: keys and passwords are files outside the store, owned as their readers need" =
      check.eq
        (lib.mapAttrs (_: config: {
          key = {
            inherit (config.environment.etc."nats/tls/key.pem") mode user;
          };
          password = config.environment.etc."policy-service/nats-password".mode;
          operator = config.environment.etc."nats-operator/password".mode;
        }) tlsAuth.nodes)
        (
          lib.genAttrs leafNames (_: {
            key = {
              mode = "0400";
              user = "nats";
            };
            password = "0400";
            operator = "0400";
          })
        );

    "cluster-tls-auth: the service connects with tls://localhost, the CA and user + password file (credentials)" =
      check.isTrue
        (lib.all (
          r:
          r.serviceEnvironment.NATS_URL == "tls://localhost:4222"
          && r.serviceEnvironment.NATS_USER == "policy-service"
          && r.serviceEnvironment.NATS_PASSWORD_FILE == "$CREDENTIALS_DIRECTORY/nats-password"
          && r.serviceEnvironment.NATS_CA_FILE == "$CREDENTIALS_DIRECTORY/nats-ca"
          && r.serviceCredentials.nats-password == "/etc/policy-service/nats-password"
          && lib.hasSuffix "/ca.pem" r.serviceCredentials.nats-ca
        ) (lib.attrValues tlsAuth.runtime))
        "the service's environment or credentials differ: ${
          check.show (lib.mapAttrs (_: r: r.serviceEnvironment) tlsAuth.runtime)
        }";

    "cluster-tls-auth: the scenario's nats uses tls:// URLs, the CA and the operator's password file" =
      check.hasAll (environmentOf tlsAuth)
        {
          LEAF1_URL = "tls://leaf1:4222";
          LEAF2_URL = "tls://leaf2:4222";
          LEAF3_URL = "tls://leaf3:4222";
          NATS_USER = "operator";
          SCENARIO_NATS_PASSWORD_FILE = "/etc/nats-operator/password";
          NATS_CA = tlsAuth.nodes.leaf1.services.policy-service.tls.caFile;
        };

    "cluster-tls-auth: no password in the scenario command" =
      check.lacks (tlsAuth.scenarioCommand "leaf1").text "test-only-operator-password";

    "a user's host names, domain and port reach the routes and the scenario (5 leaves)" =
      check.isTrue
        (
          renamed.runtime.leaf2.natsSettings.cluster.routes
          == map (n: "nats://policy-${toString n}.example.net:6222") (lib.range 1 5)
          && renamedEnvironment.LEAF5_URL == "nats://policy-5.example.net:4333"
          && renamedEnvironment.LEAF1_MONITOR == "http://policy-1.example.net:8222"
          && renamedEnvironment.LEAF_COUNT == "5"
          && renamed.runtime.leaf4.serviceEnvironment.STREAM_REPLICAS == "5"
          && lib.attrNames renamed.test.nodes == map (n: "leaf${toString n}") (lib.range 1 5)
        )
        "routes ${check.show renamed.runtime.leaf2.natsSettings.cluster.routes}, scenario ${check.show renamedEnvironment}";

    "refused: 2 leaves (no quorum after a crash)" = check.refused (userCall { leaves = 2; }).test.name;
    "refused: 6 leaves (JetStream keeps at most 5 replicas)" =
      check.refused
        (userCall { leaves = 6; }).test.name;
    "refused: an unknown client attribute" =
      check.refused
        (userCall { client.password = "x"; }).test.name;
    "refused (assertion): streamReplicas below the number of leaves" = check.isTrue (lib.any
      (lib.hasInfix "set streamReplicas = leaves")
      (
        check.failedAssertions
          (userCall {
            leaves = 4;
            leafModules = [ { services.policy-service.streamReplicas = 3; } ];
          }).nodes.leaf1
      )
    ) "no failed assertion about streamReplicas";
  }
