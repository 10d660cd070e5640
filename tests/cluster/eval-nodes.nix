# Each leaf of ./nodes.nix evaluated through the NixOS stand-in evaluation
# (../nix/lib/node-runtime.nix): what NixOS would give nats-server and the policy-service
# unit on that node. Used by ./run-local:
#   nix-instantiate --eval --strict --json tests/cluster/eval-nodes.nix --argstr nixpkgsLib <nixpkgs>/lib
#   -> { leaf1 = { hostName; nats = <services.nats.settings>; environment = <unit environment>;
#                  credentials; warnings; unit = { restart; restartSec; startLimitBurst;
#                  execStartPreArgs; serviceConfig; }; }; leaf2 = …; leaf3 = …; }
# `unit` is how systemd would run the service (run-local emulates it): restart policy and
# the arguments of ExecStartPre (the store path of the package itself is not used here).
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  cluster = import ./nodes.nix;
  evalLeaf =
    name:
    let
      modules = [ cluster.nodes.${name} ];
      node = import ../nix/lib/node-runtime.nix { inherit lib modules; };
      unit = (import ../nix/lib/eval-nixos.nix { inherit lib modules; }).systemd.services.policy-service;
      serviceConfig = unit.serviceConfig;
      argsOf = command: lib.drop 1 (lib.filter (w: w != "") (lib.splitString " " command));
    in
    {
      inherit (node) hostName warnings;
      nats = node.natsSettings;
      environment = node.serviceEnvironment;
      credentials = node.serviceCredentials;
      unit = {
        restart = serviceConfig.Restart or "no";
        restartSec = serviceConfig.RestartSec or 0;
        startLimitBurst = unit.startLimitBurst or 5;
        execStartPreArgs = map argsOf (lib.toList (serviceConfig.ExecStartPre or [ ]));
        # For an offline `systemd-analyze security` of the unit (run-local step 7-offline).
        inherit serviceConfig;
      };
    };
in
lib.genAttrs cluster.leafNames evalLeaf
