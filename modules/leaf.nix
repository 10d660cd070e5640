# leafModule: one module for NixOS and nix-darwin leaf nodes. It picks its platform from
# the special argument `modulesPath` (nix-darwin's module tree has `launchd/`, NixOS' has
# not); special arguments are outside the module fixpoint, so choosing imports from them
# cannot recurse. On nix-darwin it also brings services.nats (./nats-darwin.nix).
{ modulesPath, ... }:
let
  isDarwin = builtins.pathExists (modulesPath + "/launchd");
in
{
  imports =
    if isDarwin then
      [
        ./darwin.nix
        ./nats-darwin.nix
      ]
    else
      [ ./nixos.nix ];
}
