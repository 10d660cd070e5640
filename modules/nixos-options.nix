# NixOS-only options of services.policy-service (nix-darwin runs the daemon as the
# fixed user `_policy-service`, see ./darwin.nix).
{ lib, ... }:
{
  options.services.policy-service = {
    user = lib.mkOption {
      type = lib.types.str;
      default = "policy-service";
      example = "policy";
      description = ''
        System user the service runs as (NixOS only). The default user is created with
        {option}`services.policy-service.group` as its group; any other user must exist.
      '';
    };
    group = lib.mkOption {
      type = lib.types.str;
      default = "policy-service";
      example = "policy";
      description = ''
        System group the service runs as (NixOS only). The default group is created;
        any other group must exist.
      '';
    };
  };
}
