# Each leaf of checks.*-linux.cluster (../cluster.nix: lib.mkLeafClusterTest with ./nodes.nix)
# evaluated through the NixOS stand-in evaluation (./eval-calls.nix,
# ../nix/lib/node-runtime.nix): what NixOS would give nats-server and the policy-service
# unit on that node. Used by ./run-local:
#   nix-instantiate --eval --strict --json tests/cluster/eval-nodes.nix --argstr nixpkgsLib <nixpkgs>/lib [--argstr call tls-auth]
#   -> { leaf1 = { hostName; nats = <services.nats.settings>; environment = <unit environment>;
#                  credentials; warnings; etc; scenario = <cluster-scenario's environment>;
#                  unit = { restart; restartSec; startLimitBurst; execStartPreArgs;
#                  serviceConfig; }; }; leaf2 = …; leaf3 = …; }
# `unit` is how systemd would run the service (run-local emulates it): restart policy and
# the arguments of ExecStartPre (the store path of the package itself is not used here).
{
  nixpkgsLib,
  # Which call: "cluster" (../cluster.nix) or "tls-auth" (./tls-auth.nix).
  call ? "cluster",
}:
let
  lib = import nixpkgsLib;
  cluster = (import ./eval-calls.nix { inherit lib; }).${call};
  evalLeaf =
    name:
    let
      node = cluster.runtime.${name};
      unit = cluster.nodes.${name}.systemd.services.policy-service;
      serviceConfig = unit.serviceConfig;
      argsOf = command: lib.drop 1 (lib.filter (w: w != "") (lib.splitString " " command));
    in
    {
      inherit (node) hostName warnings;
      # The operator's `policy-service` command on the leaf's PATH, and the package executable it
      # runs (run-local puts this checkout's build in its place).
      operatorCommand = node.operatorCommand;
      packageExe = lib.getExe cluster.nodes.${name}.services.policy-service.package;
      nats = node.natsSettings;
      environment = node.serviceEnvironment;
      credentials = node.serviceCredentials;
      # environment.etc files (the test's own secrets and keys): text, or the source path.
      etc = lib.mapAttrs (_: file: {
        inherit (file) mode user;
        text = file.text;
        # toString keeps a repository file where it is (interpolation would name a store
        # copy that this evaluation does not create).
        source =
          if file.text != null then
            null
          else if builtins.isPath file.source then
            toString file.source
          else
            "${file.source}";
      }) (cluster.nodes.${name}.environment.etc or { });
      # What the VM's cluster-scenario command is told (leaf URLs, credentials of `nats`).
      scenario = cluster.test.passthru.scenarioEnvironment {
        config = cluster.nodes.${name};
        inherit (cluster) nodes;
      };
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
lib.genAttrs (lib.attrNames cluster.test.nodes) evalLeaf
