# The per-leaf NixOS configuration of the three-node cluster test, written the way the
# seed's "Production NixOS Leaf Node" and "Multi-Leaf Deployment" examples say.
# Shared by the VM test (../cluster.nix) and by ./run-local, which evaluates each leaf
# through the NixOS stand-in evaluation (./eval-nodes.nix) and runs what comes out.
# Only options that exist in a real NixOS system (plus our leafModule) are used here;
# VM-only settings (memory, the scenario package) live in ../cluster.nix.
let
  leafNames = [
    "leaf1"
    "leaf2"
    "leaf3"
  ];

  leaf =
    name:
    { pkgs, ... }:
    {
      imports = [ ../../modules/leaf.nix ];

      networking.hostName = name;
      # NATS client + cluster, as in the seed; 8222 is the monitoring port the
      # scenario reads (/healthz, /jsz: meta leader and each replica's last sequence).
      networking.firewall.allowedTCPPorts = [
        4222
        6222
        8222
      ];

      services.nats = {
        enable = true;
        jetstream = true;
        serverName = name; # must be unique within the cluster
        # The seed's spelling; leafModule aliases it to nixpkgs' services.nats.settings.
        serverConfig = {
          cluster = {
            name = "policy-cluster";
            port = 6222;
            # All three, self included (NATS ignores the self-route), exactly as the seed lists them.
            routes = map (n: "nats://${n}:6222") leafNames;
          };
          http_port = 8222;
          # systemd stops nats with SIGUSR2 (lame duck): 30 s (nats-server's minimum;
          # "5s" is refused at config validation) instead of the default 2 min.
          lame_duck_duration = "30s";
          lame_duck_grace_period = "1s";
          # fsync before every acknowledgement. The test power-cuts leaf1 (crash()) and then
          # requires it to rejoin with the same last sequence; with the default 2-minute sync
          # interval an OS-level crash may lose acknowledged writes on that node (Jepsen,
          # NATS 2.12.1). An event store wants this in production too; the cost (a few
          # hundred writes/s per stream) is irrelevant at policy-management rates.
          jetstream.sync_interval = "always";
        };
      };

      services.policy-service = {
        enable = true;
        natsUrl = "nats://localhost:4222"; # still local, as the seed says
        streamName = "POLICY_EVENTS"; # same on every leaf
        streamReplicas = 3;
        logLevel = "info";
        snapshotFrequency = 100;
        metrics.enable = true; # /metrics and /ready on 127.0.0.1:9464, scraped by run-local
      };

      environment.systemPackages = [
        pkgs.natscli
        pkgs.jq
      ];
    };
in
{
  inherit leafNames;
  # leaf name -> NixOS module
  nodes = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = leaf name;
    }) leafNames
  );
}
