# Stand-in declarations for the parts of NixOS our modules touch, typed as NixOS types
# them (nixpkgs nixos/modules/system/boot/systemd.nix + systemd-unit-options.nix,
# config/users-groups.nix, tasks/network-interfaces.nix, services/networking/nats.nix).
# Every assumption, with the real file it was checked against, is listed in ./README.md.
# Used by ./eval-nixos.nix; the real NixOS module tree is not available offline.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-unit-options.nix's unitOption: when the first definition (after
  # mkOverride filtering) is a list, every definition must be a list and they concatenate
  # (a repeatable option such as ExecStartPre); a list among scalar definitions throws.
  # Otherwise the scalars must agree (mergeEqualOption; a list among them conflicts).
  # Like the real type it has no `check`: any value is a definition.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if builtins.isList (lib.head defs').value then
        lib.concatMap (
          def:
          if builtins.isList def.value then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}"
        ) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitList = mkOption {
    type = types.listOf unitNameType;
    default = [ ];
  };
  # systemd-lib's checkUnitConfig "Service" assertions on well-known keys.
  serviceConfigType = types.addCheck (types.attrsOf unitOption) (
    cfg:
    (
      !(cfg ? Type)
      || builtins.elem cfg.Type [
        "exec"
        "simple"
        "forking"
        "oneshot"
        "dbus"
        "notify"
        "notify-reload"
        "idle"
      ]
    )
    && (
      !(cfg ? Restart)
      || builtins.elem cfg.Restart [
        "no"
        "on-success"
        "on-failure"
        "on-abnormal"
        "on-watchdog"
        "on-abort"
        "always"
      ]
    )
  );
  serviceModule =
    { ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        description = mkOption {
          type = types.singleLineStr;
          default = "";
        };
        documentation = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        wantedBy = unitList;
        requiredBy = unitList;
        upheldBy = unitList;
        after = unitList;
        before = unitList;
        wants = unitList;
        requires = unitList;
        bindsTo = unitList;
        partOf = unitList;
        conflicts = unitList;
        upholds = unitList;
        environment = mkOption {
          type = types.attrsOf (
            types.nullOr (
              types.oneOf [
                types.str
                types.path
                types.package
              ]
            )
          );
          default = { };
        };
        path = mkOption {
          type = types.listOf (
            types.oneOf [
              types.package
              types.str
            ]
          );
          default = [ ];
        };
        serviceConfig = mkOption {
          type = serviceConfigType;
          default = { };
        };
        unitConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
        startLimitIntervalSec = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        startLimitBurst = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        script = mkOption {
          type = types.lines;
          default = "";
        };
        preStart = mkOption {
          type = types.lines;
          default = "";
        };
        postStart = mkOption {
          type = types.lines;
          default = "";
        };
        restartTriggers = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
      };
    };

  userModule =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
        };
        uid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
        };
        isNormalUser = mkOption {
          type = types.bool;
          default = false;
        };
        group = mkOption {
          type = types.str;
          default = "";
        };
        extraGroups = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        description = mkOption {
          type = types.passwdEntry types.str;
          default = "";
        };
        home = mkOption {
          type = types.passwdEntry types.path;
          default = "/var/empty";
        };
        createHome = mkOption {
          type = types.bool;
          default = false;
        };
        shell = mkOption {
          type = types.nullOr (types.either types.package (types.passwdEntry types.path));
          default = null;
        };
      };
    };
  groupModule =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
        };
        gid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        members = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
      };
    };

  # services.nats as nixpkgs declares and implements it (nixos/modules/services/networking/nats.nix;
  # ./README.md says which version was read).
  nats = config.services.nats;
  natsFormat = pkgs.formats.json { };
  natsConfigFile = natsFormat.generate "nats.conf" nats.settings;
  natsValidated =
    file:
    if nats.validateConfig then
      pkgs.runCommand "validate-nats-conf" { nativeBuildInputs = [ pkgs.nats-server ]; } ''
        nats-server --config "${file}" -t
        ln -s "${file}" "$out"
      ''
    else
      file;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule serviceModule);
      default = { };
    };
    users.users = mkOption {
      type = types.attrsOf (types.submodule userModule);
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (types.submodule groupModule);
      default = { };
    };
    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.firewall = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      allowedUDPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    # Set by the seed's production example ("Monitoring").
    services.prometheus.exporters.node.enable = lib.mkEnableOption "the Prometheus node exporter";
    # Set by a machine's hardware configuration (and by checks/default.nix's base module).
    fileSystems = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.device = mkOption { type = types.str; };
          options.fsType = mkOption {
            type = types.str;
            default = "auto";
          };
        }
      );
      default = { };
    };
    boot.loader.grub.enable = mkOption {
      type = types.bool;
      default = true;
    };
    nixpkgs.hostPlatform = mkOption {
      type = types.either types.str types.attrs;
      default = pkgs.stdenv.hostPlatform.system;
    };
    system.stateVersion = mkOption {
      type = types.str;
      default = "26.05";
    };

    services.nats = {
      enable = lib.mkEnableOption "NATS messaging system";
      user = mkOption {
        type = types.str;
        default = "nats";
      };
      group = mkOption {
        type = types.str;
        default = "nats";
      };
      serverName = mkOption {
        type = types.str;
        default = "nats";
      };
      jetstream = lib.mkEnableOption "JetStream";
      port = mkOption {
        type = types.port;
        default = 4222;
      };
      dataDir = mkOption {
        type = types.path;
        default = "/var/lib/nats";
      };
      settings = mkOption {
        type = natsFormat.type;
        default = { };
      };
      validateConfig = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };

  config = lib.mkMerge [
    {
      # config/users-groups.nix
      assertions = lib.flatten (
        lib.mapAttrsToList (n: u: [
          {
            assertion = u.isSystemUser != u.isNormalUser;
            message = "Exactly one of users.users.${n}.isSystemUser and users.users.${n}.isNormalUser must be set.";
          }
          {
            assertion = u.group != "";
            message = "users.users.${n}.group is unset. This used to default to nogroup, but this is unsafe.";
          }
        ]) config.users.users
      );
    }
    (lib.mkIf nats.enable {
      services.nats.settings = {
        server_name = nats.serverName;
        port = nats.port;
        jetstream = lib.optionalAttrs nats.jetstream { store_dir = nats.dataDir; };
      };
      systemd.services.nats = {
        description = "NATS messaging system";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = lib.mkMerge [
          (lib.mkIf (nats.dataDir == "/var/lib/nats") {
            StateDirectory = "nats";
            StateDirectoryMode = "0750";
          })
          {
            Type = "simple";
            ExecStart = "${pkgs.nats-server}/bin/nats-server -c ${natsValidated natsConfigFile}";
            ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
            KillMode = "mixed";
            KillSignal = "SIGUSR2";
            SuccessExitStatus = [
              0
              "SIGUSR2"
            ];
            TimeoutStopSec = "150";
            Restart = "on-failure";
            User = nats.user;
            Group = nats.group;
            LimitNOFILE = 800000;
            ReadOnlyPaths = [ ];
            ReadWritePaths = [ nats.dataDir ];
            # Hardening, as nats.nix sets it.
            CapabilityBoundingSet = "";
            LockPersonality = true;
            MemoryDenyWriteExecute = true;
            NoNewPrivileges = true;
            PrivateDevices = true;
            PrivateTmp = true;
            PrivateUsers = true;
            ProcSubset = "pid";
            ProtectClock = true;
            ProtectControlGroups = true;
            ProtectHome = true;
            ProtectHostname = true;
            ProtectKernelLogs = true;
            ProtectKernelModules = true;
            ProtectKernelTunables = true;
            ProtectProc = "invisible";
            ProtectSystem = "strict";
            RestrictAddressFamilies = [
              "AF_INET"
              "AF_INET6"
            ];
            RestrictNamespaces = true;
            RestrictRealtime = true;
            RestrictSUIDSGID = true;
            SystemCallFilter = [
              "@system-service"
              "~@privileged"
            ];
            UMask = "0077";
          }
        ];
      };
      users.users = lib.mkIf (nats.user == "nats") {
        nats = {
          description = "NATS daemon user";
          isSystemUser = true;
          group = nats.group;
          home = nats.dataDir;
        };
      };
      users.groups = lib.mkIf (nats.group == "nats") { nats = { }; };
    })
  ];
}
