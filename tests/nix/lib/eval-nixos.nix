# NixOS stand-in evaluation: evaluates NixOS modules offline, without nixpkgs.
#
#   import ./eval-nixos.nix { lib; modules; pkgs ? <stand-in>; specialArgs ? { }; }
#     -> the evaluated `config`
#
# `lib` is nixpkgs' lib (lib/ of nixpkgs or nix-community/nixpkgs.lib); `modules` are the
# node's NixOS modules (e.g. [ flake.leafModule { services.nats = …; } ]). Declarations for
# systemd.services, users, networking, environment.systemPackages, assertions/warnings and
# services.nats (with nixpkgs' config: serverName/port/jetstream merged into settings) come
# from ./nixos-stand-in.nix. `modulesPath` is a fake NixOS module tree (no launchd/), and the
# evaluation class is "nixos", as in nixpkgs' eval-config.nix.
#
# For the cluster test: ./node-runtime.nix wraps this and returns, per node, the NATS
# server's settings (→ nats-server JSON config) and the policy-service environment.
{
  lib,
  modules,
  pkgs ? import ./stand-in-pkgs.nix { inherit lib; },
  specialArgs ? { },
}:
(lib.evalModules {
  class = "nixos";
  specialArgs = {
    modulesPath = ./fake-nixos-modules;
  }
  // specialArgs;
  modules = [
    ./nixos-stand-in.nix
    { _module.args.pkgs = pkgs; }
  ]
  ++ modules;
}).config
