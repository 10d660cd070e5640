# flake.nix
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    darwin.url = "github:LnL7/nix-darwin";
    cim-domain-policy.url = "github:thecowboyai/cim-domain-policy";
  };

  outputs = { self, nixpkgs, darwin, cim-domain-policy }: {
    darwinConfigurations.dev-mac = darwin.lib.darwinSystem {
      system = "aarch64-darwin";
      modules = [
        cim-domain-policy.leafModule
        {
          # Local NATS server
          services.nats = {
            enable = true;
            jetstream = true;
          };

          # Policy service with debug logging
          services.policy-service = {
            enable = true;
            natsUrl = "nats://localhost:4222";
            streamName = "POLICY_EVENTS";
            logLevel = "debug";
            snapshotFrequency = 50;  # More frequent snapshots for dev
          };
        }
      ];
    };
  };
}
