# flake.nix
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    cim-domain-policy.url = "github:thecowboyai/cim-domain-policy";
  };

  outputs = { self, nixpkgs, cim-domain-policy }: {
    nixosConfigurations.leaf-node-1 = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [
        ./hardware-configuration.nix
        cim-domain-policy.leafModule
        {
          services.policy-service = {
            enable = true;
            natsUrl = "nats://localhost:4222";
            streamName = "POLICY_EVENTS";
            logLevel = "info";
            snapshotFrequency = 100;
          };
        }
      ];
    };
  };
}
