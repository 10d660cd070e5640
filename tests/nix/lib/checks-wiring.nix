# checks/default.nix evaluated offline, with the stand-ins in place of nixpkgs and
# nix-darwin: the check names per platform and the reports of the evaluation checks.
# (The real checks need nixpkgs; this proves their wiring, not their build.)
{
  lib,
  repo,
  nixDarwin ? null,
}:
let
  self = import ./offline-flake.nix { inherit lib repo; };
  checksFor =
    system:
    import (repo + "/checks") {
      inherit self lib;
      pkgs = import ./stand-in-pkgs.nix { inherit lib system; };
      nixpkgs.lib = lib // {
        nixosSystem = args: {
          config = import ./eval-nixos.nix {
            inherit lib;
            inherit (args) modules;
          };
        };
      };
      nix-darwin.lib.darwinSystem = args: {
        config = import ./eval-darwin.nix {
          inherit lib nixDarwin system;
          inherit (args) modules;
        };
      };
    };
in
{
  linux = lib.attrNames (checksFor "x86_64-linux");
  darwin = lib.attrNames (checksFor "aarch64-darwin");
  linuxReport = (checksFor "x86_64-linux").nixos-module-eval.report;
}
// lib.optionalAttrs (nixDarwin != null) {
  darwinReport = (checksFor "aarch64-darwin").darwin-module.report;
}
