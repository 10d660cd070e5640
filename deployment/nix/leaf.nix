# Non-flake entry point (the seed's "Direct Import" method): the same leafModule as the
# flake's. The package is built from this checkout with the importing system's `pkgs`.
{
  imports = [ ../../modules/leaf.nix ];
}
