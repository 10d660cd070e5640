{
  inputs.cim-domain-policy.url = "github:thecowboyai/cim-domain-policy";

  outputs = { self, nixpkgs, cim-domain-policy, ... }: {
    # For NixOS leaf nodes
    nixosConfigurations.my-leaf = nixpkgs.lib.nixosSystem {
      modules = [
        cim-domain-policy.leafModule
        {
          services.policy-service = {
            enable = true;
            natsUrl = "nats://localhost:4222";  # Your leaf's NATS
          };
        }
      ];
    };

    # For nix-darwin leaf nodes (macOS)
    darwinConfigurations.my-mac-leaf = darwin.lib.darwinSystem {
      modules = [
        cim-domain-policy.leafModule
        {
          services.policy-service = {
            enable = true;
            natsUrl = "nats://localhost:4222";  # Your leaf's NATS
          };
        }
      ];
    };
  };
}
