# What a NixOS node runs, as JSON-able data, for running a node's processes outside a VM
# (tests/cluster) from the same modules the VM test uses:
#
#   import ./node-runtime.nix { lib; modules; }  ->
#     { hostName; natsEnabled; natsSettings; policyServiceEnabled; serviceEnvironment;
#       serviceCredentials; operatorCommand; warnings; }
#
# natsSettings        config.services.nats.settings: write it with builtins.toJSON and run
#                     `nats-server -c <file>` (store_dir etc. are the node's real paths:
#                     override them for a local run).
# serviceEnvironment  config.systemd.services.policy-service.environment. Values of the
#                     NATS_*_FILE variables are `$CREDENTIALS_DIRECTORY/<name>` (literally;
#                     the service expands it): set CREDENTIALS_DIRECTORY to a directory
#                     holding the files serviceCredentials maps each <name> to.
# operatorCommand     the text of the `policy-service` command the module puts on the
#                     system PATH (environment.systemPackages): the service's environment
#                     with the configured credential files, then `exec <package>/bin/policy-service "$@"`.
# It throws, like a NixOS build would, when an assertion of the configuration fails.
{
  lib,
  modules,
  pkgs ? import ./stand-in-pkgs.nix { inherit lib; },
}:
let
  config = import ./eval-nixos.nix { inherit lib modules pkgs; };
  failed = lib.filter (a: !a.assertion) config.assertions;
  unit = config.systemd.services.policy-service or null;
  credentials = lib.listToAttrs (
    map (
      entry:
      let
        parts = lib.splitString ":" entry;
      in
      lib.nameValuePair (lib.head parts) (lib.concatStringsSep ":" (lib.tail parts))
    ) (lib.toList (if unit == null then [ ] else unit.serviceConfig.LoadCredential or [ ]))
  );
in
if failed != [ ] then
  throw "Failed assertions:\n${lib.concatMapStringsSep "\n" (a: "- ${a.message}") failed}"
else
  {
    hostName = config.networking.hostName;
    natsEnabled = config.services.nats.enable;
    natsSettings = config.services.nats.settings;
    policyServiceEnabled = unit != null;
    serviceEnvironment = if unit == null then { } else unit.environment;
    serviceCredentials = credentials;
    operatorCommand =
      (lib.findFirst (p: (p.name or "") == "policy-service") { } config.environment.systemPackages).text
        or null;
    inherit (config) warnings;
  }
