# services.nats for nix-darwin, which has no NATS module: the interface of nixpkgs'
# NixOS module (nixos/modules/services/networking/nats.nix) running nats-server under
# launchd (label org.nixos.nats), plus the seed's `serverConfig` alias of `settings`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.nats;
  settingsFormat = pkgs.formats.json { };
  configFile = settingsFormat.generate "nats.conf" cfg.settings;
  validatedConfig =
    if cfg.validateConfig then
      pkgs.runCommand "validate-nats-conf" { nativeBuildInputs = [ pkgs.nats-server ]; } ''
        nats-server --config "${configFile}" -t
        ln -s "${configFile}" "$out"
      ''
    else
      configFile;
  defaultUser = "_nats";
  defaultDataDir = "/var/lib/nats";
  logDir = "/var/log";
in
{
  _class = "darwin";

  imports = [
    (lib.mkAliasOptionModule
      [
        "services"
        "nats"
        "serverConfig"
      ]
      [
        "services"
        "nats"
        "settings"
      ]
    )
  ];

  options.services.nats = {
    enable = lib.mkEnableOption "NATS messaging system";

    user = mkOption {
      type = types.str;
      default = defaultUser;
      description = ''
        User account under which NATS runs. The default `_nats` is created (uid/gid 4222);
        any other user must exist. (NixOS' default is `nats`; macOS system users start with `_`.)
      '';
    };

    group = mkOption {
      type = types.str;
      default = defaultUser;
      description = "Group under which NATS runs. The default `_nats` is created; any other group must exist.";
    };

    serverName = mkOption {
      type = types.str;
      default = "nats";
      example = "n1-c3";
      description = "Name of the NATS server, must be unique if clustered.";
    };

    jetstream = lib.mkEnableOption "JetStream";

    port = mkOption {
      type = types.port;
      default = 4222;
      description = "Port on which to listen.";
    };

    dataDir = mkOption {
      type = types.path;
      default = defaultDataDir;
      description = ''
        The NATS data directory. Only used if JetStream is enabled, for storing stream
        metadata and messages. Created on activation and owned by {option}`services.nats.user`.
      '';
    };

    settings = mkOption {
      inherit (settingsFormat) type;
      default = { };
      example = lib.literalExpression ''
        {
          cluster = {
            name = "policy-cluster";
            port = 6222;
            routes = [ "nats://leaf-1.internal:6222" "nats://leaf-2.internal:6222" ];
          };
        }
      '';
      description = ''
        Declarative NATS configuration (JSON). See <https://docs.nats.io/running-a-nats-service/configuration>.
        It lands in the world-readable Nix store: keep secrets out of it.
      '';
    };

    validateConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        If true, validate the NATS config with `nats-server -t` at build time. Disable it when
        the config includes other files or refers to files absent at build time. When the
        config names a `*_file` (a TLS certificate or key) outside the Nix store, the leaf
        modules default it to false: the build cannot read that file.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # As on NixOS (./nixos.nix): files outside the store cannot be read where the config is validated.
    services.nats.validateConfig = lib.mkIf (
      import ./nats-build-files.nix {
        inherit lib;
        inherit (cfg) settings;
      } != [ ]
    ) (lib.mkDefault false);

    services.nats.settings = {
      server_name = cfg.serverName;
      port = cfg.port;
      # Unlike nixpkgs (nixpkgs#531245), no empty `jetstream` block when JetStream is off:
      # nats-server would enable JetStream for any map.
    }
    // lib.optionalAttrs cfg.jetstream { jetstream.store_dir = cfg.dataDir; };

    users = lib.mkIf (cfg.user == defaultUser) {
      knownUsers = [ defaultUser ];
      knownGroups = lib.mkIf (cfg.group == defaultUser) [ defaultUser ];
      users.${defaultUser} = {
        uid = lib.mkDefault 4222;
        gid = lib.mkDefault 4222;
        home = cfg.dataDir;
        shell = "/usr/bin/false";
        description = "NATS daemon user";
      };
      groups = lib.mkIf (cfg.group == defaultUser) {
        ${defaultUser} = {
          gid = lib.mkDefault 4222;
          description = "NATS daemon group";
        };
      };
    };

    # preActivation runs before users exist: use the numeric ids of the default user.
    system.activationScripts.preActivation.text =
      let
        owner =
          if cfg.user == defaultUser then
            "${toString config.users.users.${defaultUser}.uid}:${
              toString config.users.users.${defaultUser}.gid
            }"
          else
            "${cfg.user}:${cfg.group}";
      in
      ''
        mkdir -p ${lib.escapeShellArg (toString cfg.dataDir)}
        chown ${owner} ${lib.escapeShellArg (toString cfg.dataDir)}
        chmod 0750 ${lib.escapeShellArg (toString cfg.dataDir)}
        touch ${logDir}/nats.log ${logDir}/nats.error.log
        chown ${owner} ${logDir}/nats.log ${logDir}/nats.error.log
      '';

    environment.systemPackages = [ pkgs.nats-server ];

    launchd.daemons.nats = {
      command = "${lib.getExe' pkgs.nats-server "nats-server"} -c ${validatedConfig}";
      serviceConfig = {
        KeepAlive = true;
        RunAtLoad = true;
        UserName = cfg.user;
        GroupName = cfg.group;
        WorkingDirectory = toString cfg.dataDir;
        StandardOutPath = "${logDir}/nats.log";
        StandardErrorPath = "${logDir}/nats.error.log";
        # JetStream keeps two file descriptors open per stream.
        SoftResourceLimits.NumberOfFiles = 65536;
        HardResourceLimits.NumberOfFiles = 65536;
        # Lame-duck shutdown (default 2 min) needs time before launchd's SIGKILL.
        ExitTimeOut = 150;
      };
    };
  };
}
