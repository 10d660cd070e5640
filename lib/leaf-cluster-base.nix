# What every leaf of the cluster test needs for the scenario, below the caller's own leaf
# modules: everything here is a default (lib.mkDefault) that their settings replace,
# except what the scenario cannot do without (NATS with JetStream, the service, a replica
# of the stream on every leaf). Used by ./leaf-cluster-test.nix.
{ leaf, hostOf }:
{
  config,
  lib,
  nodes,
  pkgs,
  ...
}:
let
  nats = config.services.nats;
  routeTo =
    leafName:
    "nats://${hostOf nodes.${leafName}}:${
      toString (nodes.${leafName}.services.nats.settings.cluster.port or 6222)
    }";
in
{
  # For the caller's leaf modules: `{ leaf, ... }:` gives { number; name; leafNames; count; }.
  _module.args.leaf = leaf;

  networking.hostName = lib.mkDefault leaf.name;
  # NATS clients, routes and the monitoring endpoint the scenario reads (/healthz, /jsz).
  networking.firewall.allowedTCPPorts = lib.filter (port: port != null) [
    nats.port
    (nats.settings.cluster.port or null)
    (nats.settings.http_port or nats.settings.monitor_port or nats.settings.https_port or null)
  ];

  services.nats = {
    enable = true;
    jetstream = true;
    settings = {
      cluster = {
        name = lib.mkDefault "policy-cluster";
        port = lib.mkDefault 6222;
        # Every leaf, self included (NATS ignores the self-route).
        routes = lib.mkDefault (map routeTo leaf.leafNames);
      };
      http_port = lib.mkDefault 8222;
      # systemd stops nats with SIGUSR2 (lame duck): 30 s (nats-server's minimum) instead
      # of the default 2 min, so stopping a leaf stays short.
      lame_duck_duration = lib.mkDefault "30s";
      lame_duck_grace_period = lib.mkDefault "1s";
      # fsync before every acknowledgement: the scenario power-cuts leaf1 and then requires
      # it to rejoin with the same last sequence; with the default 2-minute sync interval
      # an OS-level crash may lose acknowledged writes on that node (Jepsen, NATS 2.12.1).
      jetstream.sync_interval = lib.mkDefault "always";
    };
  };

  services.policy-service = {
    enable = true;
    streamReplicas = lib.mkDefault leaf.count;
  };

  assertions = [
    {
      assertion = config.services.policy-service.streamReplicas == leaf.count;
      message = "mkLeafClusterTest: services.policy-service.streamReplicas is ${toString config.services.policy-service.streamReplicas} on ${leaf.name}, but the test has ${toString leaf.count} leaves; the scenario checks each leaf's own replica, so set streamReplicas = leaves.";
    }
  ];

  environment.systemPackages = [
    pkgs.natscli
    pkgs.jq
  ];
}
