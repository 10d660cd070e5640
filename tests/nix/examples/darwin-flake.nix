# flake.nix
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    darwin.url = "github:LnL7/nix-darwin";
    cim-domain-policy.url = "github:thecowboyai/cim-domain-policy";
  };

  outputs = { self, nixpkgs, darwin, cim-domain-policy }: {
    darwinConfigurations.mac-leaf-1 = darwin.lib.darwinSystem {
      system = "aarch64-darwin";  # or x86_64-darwin
      modules = [
        cim-domain-policy.leafModule
        {
          services.policy-service = {
            enable = true;
            natsUrl = "nats://localhost:4222";
            streamName = "POLICY_EVENTS";
            logLevel = "info";
          };
        }
      ];
    };
  };
}
