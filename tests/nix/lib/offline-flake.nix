# Our flake's outputs evaluated with nothing but nixpkgs' lib: the module outputs must
# work like this (only packages/checks/devShells/formatter need a real nixpkgs).
# With `legacyPackages` (system -> package set, e.g. the stand-in), packages and
# devShells evaluate too.
{
  lib,
  repo,
  legacyPackages ? null,
}:
let
  flake = import (repo + "/flake.nix");
  unavailable = what: throw "offline evaluation: ${what} needs a real nixpkgs/nix-darwin";
  # Like a real flake's `self`: the outputs plus outPath.
  self = outputs // {
    outPath = repo;
  };
  outputs = flake.outputs {
    inherit self;
    nixpkgs = {
      inherit lib;
      legacyPackages =
        if legacyPackages == null then unavailable "nixpkgs.legacyPackages" else legacyPackages;
    };
    nix-darwin = unavailable "nix-darwin";
  };
in
self
