# nix-darwin evaluation through nix-darwin's own eval-config.nix and full module list,
# offline: `nixpkgs.pkgs` is the stand-in package set (./stand-in-pkgs.nix) for a darwin
# system, and the release check is off (our lib is not the nixpkgs release it expects).
#
#   import ./eval-darwin.nix { lib; nixDarwin; modules; system ? "aarch64-darwin"; }
#     -> the evaluated `config` (e.g. config.environment.launchDaemons."org.nixos.<n>.plist".text)
{
  lib,
  nixDarwin,
  modules,
  system ? "aarch64-darwin",
  pkgs ? import ./stand-in-pkgs.nix { inherit lib system; },
}:
(import (nixDarwin + "/eval-config.nix") {
  inherit lib;
  enableNixpkgsReleaseCheck = false;
  modules = [
    {
      nixpkgs.pkgs = pkgs;
      system.stateVersion = 6;
    }
  ]
  ++ modules;
}).config
