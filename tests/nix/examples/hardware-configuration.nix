# Not from the seed: stands for the machine's own hardware-configuration.nix, which the
# seed's NixOS flake examples import. The flake checks add the real file systems/boot.
{ }
