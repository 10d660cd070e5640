# The few NixOS options the cluster-test leaves use beyond ../nix/lib/nixos-stand-in.nix,
# declared as NixOS declares them, for the offline evaluation (./eval-calls.nix):
# - environment.etc.<name>.{enable,target,text,source,mode,uid,gid,user,group}
#   (nixpkgs nixos/modules/system/etc/etc.nix: mode "symlink" unless set, in which case
#   the file is copied with that mode and owner; `text` becomes `source` via writeText);
# - networking.domain (nixos/modules/tasks/network-interfaces.nix: nullOr str, null);
# - virtualisation.memorySize (nixos/modules/virtualisation/qemu-vm.nix: MiB, 1024), set
#   by the test's VM defaults.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, config, ... }:
          {
            options = {
              enable = mkOption {
                type = types.bool;
                default = true;
              };
              target = mkOption { type = types.str; };
              text = mkOption {
                type = types.nullOr types.lines;
                default = null;
              };
              source = mkOption { type = types.path; };
              mode = mkOption {
                type = types.str;
                default = "symlink";
              };
              uid = mkOption {
                type = types.int;
                default = 0;
              };
              gid = mkOption {
                type = types.int;
                default = 0;
              };
              user = mkOption {
                type = types.str;
                default = "+${toString config.uid}";
              };
              group = mkOption {
                type = types.str;
                default = "+${toString config.gid}";
              };
            };
            config = {
              target = lib.mkDefault name;
              source = lib.mkIf (config.text != null) (
                lib.mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text)
              );
            };
          }
        )
      );
    };
    networking.domain = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
    virtualisation.memorySize = mkOption {
      type = types.ints.positive;
      default = 1024;
    };
  };
  config = { };
}
