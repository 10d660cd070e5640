{
  description = "policy-service: event-sourced policy management on NATS JetStream, for NixOS and nix-darwin leaf nodes";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # Only the darwin checks (checks.*-darwin.darwin-module) read nix-darwin; flake inputs
    # are fetched when first used, so module consumers never fetch it. Consumers can also
    # drop it: inputs.cim-domain-policy.inputs.nix-darwin.follows = "";
    nix-darwin = {
      url = "github:nix-darwin/nix-darwin/nix-darwin-26.05";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      nix-darwin,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # One module for NixOS and nix-darwin: it detects the platform itself.
      leafModule = ./modules/leaf.nix;

      lib = {
        # The cluster test on your own leaves, for your checks (docs/nix.md).
        mkLeafClusterTest = import ./lib/mk-leaf-cluster-test.nix { inherit (self) leafModule; };
      };

      nixosModules = {
        default = self.nixosModules.policy-service;
        policy-service = ./modules/nixos.nix;
      };

      # A community convention (nix flake check may warn "unknown flake output").
      darwinModules = {
        default = self.darwinModules.policy-service;
        policy-service = ./modules/darwin.nix;
        # services.nats for nix-darwin, with the NixOS module's interface.
        nats = ./modules/nats-darwin.nix;
      };

      overlays.default = final: _prev: {
        policy-service = final.callPackage ./service/package.nix { };
      };

      packages = forAllSystems (pkgs: {
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.policy-service;
        policy-service = pkgs.callPackage ./service/package.nix { };
      });

      checks = forAllSystems (
        pkgs:
        import ./checks {
          inherit
            self
            lib
            pkgs
            nixpkgs
            nix-darwin
            ;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            # nixpkgs' default Node (24 in 26.05), the one the package builds with.
            pkgs.nodejs
            pkgs.nats-server
            pkgs.natscli
            pkgs.jq
          ];
          shellHook = ''
            export NATS_SERVER_BIN=${lib.getExe pkgs.nats-server}
            export NATS_CLI_BIN=${lib.getExe pkgs.natscli}
          '';
        };
      });

      # `nix fmt`: nixfmt on every .nix file but the verbatim guide copies (as tests/nix/lint).
      formatter = forAllSystems (
        pkgs: pkgs.nixfmt-tree.override { settings.formatter.nixfmt.excludes = [ "tests/nix/examples/*" ]; }
      );
    };
}
