# flake.nix
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    cim-domain-policy.url = "github:thecowboyai/cim-domain-policy/v0.8.0";
  };

  outputs = { self, nixpkgs, cim-domain-policy }: {
    nixosConfigurations.prod-leaf-1 = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [
        ./hardware-configuration.nix
        cim-domain-policy.leafModule
        {
          # Hostname and networking
          networking.hostName = "prod-leaf-1";
          networking.firewall.allowedTCPPorts = [ 4222 6222 ];  # NATS client + cluster

          # NATS server with clustering
          services.nats = {
            enable = true;
            jetstream = true;
            serverConfig = {
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
          };

          # Policy service
          services.policy-service = {
            enable = true;
            natsUrl = "nats://localhost:4222";
            streamName = "POLICY_EVENTS";
            logLevel = "info";
            snapshotFrequency = 100;
          };

          # Monitoring
          services.prometheus.exporters.node.enable = true;
        }
      ];
    };
  };
}
