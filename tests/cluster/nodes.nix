# Our own leaf configuration for checks.*-linux.cluster, written the way the seed's
# "Production NixOS Leaf Node" and "Multi-Leaf Deployment" examples say: the leaf module a
# user hands to lib.mkLeafClusterTest (../cluster.nix). The library adds leafModule and its
# own defaults (lib/leaf-cluster-base.nix); `leaf` is its module argument
# ({ number; name; leafNames; count; }).
# Only options that exist in a real NixOS system (plus our leafModule) are used here;
# VM-only settings (memory, the scenario command) are the library's.
{ leaf, pkgs, ... }:
{
  networking.hostName = leaf.name;
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
    serverName = leaf.name; # must be unique within the cluster
    # The seed's spelling; leafModule aliases it to nixpkgs' services.nats.settings.
    serverConfig = {
      cluster = {
        name = "policy-cluster";
        port = 6222;
        # All three, self included (NATS ignores the self-route), exactly as the seed lists them.
        routes = map (name: "nats://${name}:6222") leaf.leafNames;
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
      # The guide's `nats server info` / `server ping` need a system account: an NKey user,
      # as docs/leaf-node-deployment.md ("System account") shows; only the public key is here.
      # Its seed is the test-only ./system-user.test.nk (guards nothing outside this test).
      accounts.SYS.users = [ { nkey = "UAG2632QDFXGYP22RGJTMZT7OGWHGJY6FFCWSZ7Q64BBMCSIHIE3YSI6"; } ];
      system_account = "SYS";
      # Clients without credentials (the service, the scenario's natscli) stay in the global account.
      authorization.users = [ { user = "local"; } ];
      no_auth_user = "local";
    };
  };

  # The system user's seed for step_server_info: a test-only key (its public key is above).
  environment.etc."policy-cluster-test/system-user.nk" = {
    source = ./system-user.test.nk;
    mode = "0400";
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
}
