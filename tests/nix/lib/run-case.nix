# Evaluates one case file offline: [ { name; ok; detail; } ] or a skip.
#   nix-instantiate --eval --strict --json tests/nix/lib/run-case.nix \
#     --arg lib 'import <nixpkgs-lib>/lib' --arg repo ./. --arg case ./tests/nix/cases/x.nix \
#     [--arg nixDarwin /path/to/nix-darwin]
{
  lib,
  repo,
  case,
  nixDarwin ? null,
}:
let
  harness = import ./harness.nix { inherit lib repo nixDarwin; };
  results = import case harness;
in
lib.mapAttrsToList (name: r: {
  inherit name;
  ok = r.ok or false;
  detail = r.detail or "";
  skip = r.skip or null;
}) results
