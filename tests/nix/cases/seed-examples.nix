# Every example of the deployment guide, evaluated as written (../examples, verbatim):
# flake examples through their own `outputs` function with our flake as
# `cim-domain-policy`, the direct imports through deployment/nix/leaf.nix, and the
# snippets as module bodies.
{
  lib,
  flake,
  nixosSystem,
  darwinSystem,
  check,
  flakeExampleOutputs,
  directImportExample,
  moduleBodyExample,
  examples,
  ...
}:
let
  flakeOutputs = name: flakeExampleOutputs (examples + "/${name}");
  directImport = name: directImportExample (examples + "/${name}");
  fragment = name: moduleBodyExample (examples + "/${name}");
  nixos = modules: (nixosSystem { inherit modules; }).config;
  envOf = config: config.systemd.services.policy-service.environment;
  plistOf = config: config.environment.launchDaemons."org.nixos.policy-service.plist".text;
  hasPolicyService = config: expected: check.hasAll (envOf config) expected;

  # The TL;DR uses `darwin` without declaring it as an input.
  tldr = flakeOutputs "tldr-flake.nix" {
    darwin.lib = {
      inherit darwinSystem;
    };
  };
  nixosFlake = flakeOutputs "nixos-flake.nix" { };
  production = (flakeOutputs "production-nixos-flake.nix" { }).nixosConfigurations.prod-leaf-1.config;
  routes = [
    "nats://leaf-1.internal:6222"
    "nats://leaf-2.internal:6222"
    "nats://leaf-3.internal:6222"
  ];
  leaf =
    n:
    nixos [
      flake.leafModule
      (fragment "leaf-${toString n}.fragment")
    ];
  darwinCases =
    if darwinSystem == null then
      {
        "darwin examples" = {
          skip = "no nix-darwin evaluation here (offline: set POLICY_SERVICE_NIX_DARWIN; flake checks: darwin systems only)";
        };
      }
    else
      let
        development = (flakeOutputs "development-darwin-flake.nix" { }).darwinConfigurations.dev-mac.config;
        natsPlist = development.environment.launchDaemons."org.nixos.nats.plist".text;
      in
      {
        "TL;DR (darwin): my-mac-leaf runs org.nixos.policy-service" =
          check.contains (plistOf tldr.darwinConfigurations.my-mac-leaf.config) "<string>nats://localhost:4222</string>";
        "Method 1 (macOS flake): mac-leaf-1 has the configured environment" =
          check.hasAll
            (flakeOutputs "darwin-flake.nix" { })
            .darwinConfigurations.mac-leaf-1.config.launchd.daemons.policy-service.serviceConfig.EnvironmentVariables
            {
              NATS_URL = "nats://localhost:4222";
              STREAM_NAME = "POLICY_EVENTS";
              LOG_LEVEL = "info";
            };
        "Method 2 (nix-darwin direct import) via deployment/nix/leaf.nix" = check.contains (plistOf
          (darwinSystem {
            modules = [ (directImport "darwin-direct-import.nix") ];
          }).config
        ) "<string>org.nixos.policy-service</string>";
        "development macOS: NATS launchd daemon with JetStream" = check.isTrue (
          development.services.nats.settings.jetstream.store_dir == "/var/lib/nats"
          && lib.hasInfix "<string>org.nixos.nats</string>" natsPlist
          && lib.hasInfix "/bin/nats-server -c " natsPlist
        ) "NATS daemon or JetStream missing";
        "development macOS: debug logging, snapshots every 50, no warning" =
          check.eq
            {
              env = lib.getAttrs [
                "LOG_LEVEL"
                "SNAPSHOT_FREQUENCY"
              ] development.launchd.daemons.policy-service.serviceConfig.EnvironmentVariables;
              warnings = lib.filter (lib.hasInfix "policy-service") development.warnings;
            }
            {
              env = {
                LOG_LEVEL = "debug";
                SNAPSHOT_FREQUENCY = "50";
              };
              warnings = [ ];
            };
        "development macOS: assertions hold" = check.noFailedAssertions development;
        "single leaf snippet on nix-darwin" = check.contains (plistOf
          (darwinSystem {
            modules = [
              flake.leafModule
              (fragment "single-leaf.fragment")
            ];
          }).config
        ) "<string>org.nixos.policy-service</string>";
      };
in
darwinCases
// {
  "TL;DR (NixOS): my-leaf runs policy-service" =
    hasPolicyService tldr.nixosConfigurations.my-leaf.config
      {
        NATS_URL = "nats://localhost:4222";
      };
  "Method 1 (NixOS flake): leaf-node-1 has the configured environment" =
    hasPolicyService nixosFlake.nixosConfigurations.leaf-node-1.config
      {
        NATS_URL = "nats://localhost:4222";
        STREAM_NAME = "POLICY_EVENTS";
        LOG_LEVEL = "info";
        SNAPSHOT_FREQUENCY = "100";
      };
  "Method 2 (NixOS direct import) via deployment/nix/leaf.nix" = hasPolicyService (nixos [
    (directImport "nixos-direct-import.nix")
  ]) { NATS_URL = "nats://localhost:4222"; };
  "production NixOS: serverConfig.cluster reaches services.nats.settings" =
    check.eq production.services.nats.settings
      {
        server_name = "prod-leaf-1";
        port = 4222;
        jetstream.store_dir = "/var/lib/nats";
        cluster = {
          name = "prod-policy-cluster";
          port = 6222;
          routes = [
            "nats://prod-leaf-1.internal:6222"
            "nats://prod-leaf-2.internal:6222"
            "nats://prod-leaf-3.internal:6222"
          ];
        };
      };
  "production NixOS: policy-service after nats.service, firewall open, assertions hold" =
    check.isTrue
      (
        lib.elem "nats.service" production.systemd.services.policy-service.after
        && production.systemd.services ? nats
        &&
          production.networking.firewall.allowedTCPPorts == [
            4222
            6222
          ]
        && lib.all (a: a.assertion) production.assertions
      )
      "ordering, firewall or assertions wrong";
  "production NixOS: service environment" = hasPolicyService production {
    NATS_URL = "nats://localhost:4222";
    STREAM_NAME = "POLICY_EVENTS";
    LOG_LEVEL = "info";
    SNAPSHOT_FREQUENCY = "100";
  };
  "clustered snippets: NATS cluster and local policy-service" = check.isTrue (
    let
      c = nixos [
        flake.leafModule
        (fragment "cluster-nats.fragment")
        (fragment "cluster-policy-service.fragment")
      ];
    in
    c.services.nats.settings.cluster == {
      name = "policy-cluster";
      inherit routes;
    }
    && (envOf c).NATS_URL == "nats://localhost:4222"
  ) "cluster settings or environment wrong";
  "multi-leaf snippets: routes land in settings on each leaf" =
    check.eq
      (map
        (
          n:
          let
            c = leaf n;
          in
          {
            host = c.networking.hostName;
            routes = c.services.nats.settings.cluster.routes;
            enabled = c.systemd.services ? policy-service;
          }
        )
        [
          1
          2
          3
        ]
      )
      (
        map
          (n: {
            host = "leaf-${toString n}";
            inherit routes;
            enabled = true;
          })
          [
            1
            2
            3
          ]
      );
  "TLS snippet: serverConfig.tls reaches settings, tls:// URL" = check.isTrue (
    let
      c = nixos [
        flake.leafModule
        (fragment "tls.fragment")
      ];
    in
    c.services.nats.settings.tls == {
      cert_file = "/path/to/cert.pem";
      key_file = "/path/to/key.pem";
      ca_file = "/path/to/ca.pem";
    }
    && (envOf c).NATS_URL == "tls://localhost:4222"
  ) "TLS settings wrong";
  "troubleshooting snippets: snapshotFrequency 50 and 200" =
    check.eq
      (map
        (
          name:
          (envOf (nixos [
            flake.leafModule
            { services.policy-service.enable = true; }
            (fragment name)
          ])).SNAPSHOT_FREQUENCY
        )
        [
          "snapshot-50.fragment"
          "snapshot-200.fragment"
        ]
      )
      [
        "50"
        "200"
      ];
  "pin snippet: a tag pin of the flake" =
    check.eq (fragment "pin-version.fragment").inputs.cim-domain-policy.url "github:thecowboyai/cim-domain-policy/v0.8.0";
  "single leaf snippet on NixOS" = hasPolicyService (nixos [
    flake.leafModule
    (fragment "single-leaf.fragment")
  ]) { NATS_URL = "nats://localhost:4222"; };
}
