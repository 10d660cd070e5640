# Files a NATS configuration (services.nats.settings) names with a `*_file` key (TLS cert_file,
# key_file, ca_file, at any depth: tls, cluster.tls, leafnodes.tls, websocket.tls, …) that lie
# outside the Nix store. services.nats.validateConfig runs `nats-server --config FILE -t` in the
# build sandbox, where such files do not exist, so validation would fail the build.
{ lib, settings }:
let
  fileValues =
    value:
    if builtins.isAttrs value then
      lib.concatLists (
        lib.mapAttrsToList (
          name: v: if lib.hasSuffix "_file" name && builtins.isString v then [ v ] else fileValues v
        ) value
      )
    else if builtins.isList value then
      lib.concatMap fileValues value
    else
      [ ];
in
lib.filter (file: !lib.hasPrefix builtins.storeDir file) (fileValues settings)
