# Each leaf of ./nodes.nix evaluated through the NixOS stand-in evaluation
# (../nix/lib/node-runtime.nix): what NixOS would give nats-server and the policy-service
# unit on that node. Used by ./run-local:
#   nix-instantiate --eval --strict --json tests/cluster/eval-nodes.nix --argstr nixpkgsLib <nixpkgs>/lib
#   -> { leaf1 = { hostName; nats = <services.nats.settings>; environment = <unit environment>;
#                  credentials; warnings; }; leaf2 = …; leaf3 = …; }
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  cluster = import ./nodes.nix;
  evalLeaf =
    name:
    let
      node = import ../nix/lib/node-runtime.nix {
        inherit lib;
        modules = [ cluster.nodes.${name} ];
      };
    in
    {
      inherit (node) hostName warnings;
      nats = node.natsSettings;
      environment = node.serviceEnvironment;
      credentials = node.serviceCredentials;
    };
in
lib.genAttrs cluster.leafNames evalLeaf
