# nix-darwin implementation of services.policy-service: a launchd daemon
# (label org.nixos.policy-service) running as the hidden user `_policy-service`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.policy-service;
  # launchd has no credentials store: the service reads the configured files directly,
  # so they must be readable by `_policy-service`.
  runtime = import ./environment.nix {
    inherit lib cfg;
    secretPath = _name: file: file;
  };
  userName = "_policy-service";
  # Static ids (nix-darwin creates only users with a fixed uid); override with
  # users.users._policy-service.uid / users.groups._policy-service.gid.
  uid = config.users.users.${userName}.uid;
  gid = config.users.groups.${userName}.gid;
  workingDirectory = "/var/lib/policy-service";
  logFile = "/var/log/policy-service.log";
  errorLogFile = "/var/log/policy-service.error.log";
  executable = lib.getExe cfg.package;
  # services.nats comes from ./nats-darwin.nix (leafModule imports it; darwinModules.nats).
  nats = config.services.nats or { enable = false; };
in
{
  _class = "darwin";

  imports = [ ./options.nix ];

  config = lib.mkIf cfg.enable {
    # JetStream clustering needs a unique server_name per node; nats-darwin's default "nats"
    # is the same on every leaf.
    assertions = lib.optional (nats.enable && (nats.settings.cluster.routes or [ ]) != [ ]) {
      assertion = nats.serverName != "nats";
      message = ''services.nats has cluster routes but its server name is "nats", a default every leaf shares: JetStream clustering needs a unique name per node. Set services.nats.serverName to a name unique to this leaf.'';
    };

    users.knownUsers = [ userName ];
    users.knownGroups = [ userName ];
    users.users.${userName} = {
      uid = lib.mkDefault 536;
      gid = lib.mkDefault gid;
      home = workingDirectory;
      shell = "/usr/bin/false";
      description = "Policy service daemon user";
    };
    users.groups.${userName} = {
      gid = lib.mkDefault 536;
      description = "Policy service daemon group";
    };

    # nix-darwin runs only its fixed activation scripts; preActivation comes before the
    # users exist, hence numeric ids.
    system.activationScripts.preActivation.text = ''
      mkdir -p ${workingDirectory}
      chown ${toString uid}:${toString gid} ${workingDirectory}
      chmod 0700 ${workingDirectory}
      touch ${logFile} ${errorLogFile}
      chown ${toString uid}:${toString gid} ${logFile} ${errorLogFile}
      chmod 0640 ${logFile} ${errorLogFile}
    '';

    # `policy-service ctl status` for operators, with the daemon's environment; the
    # credential files must be readable by whoever runs it (`sudo policy-service ctl status`).
    environment.systemPackages = [
      (import ./operator-command.nix {
        inherit lib pkgs cfg;
        environment = runtime.operatorEnvironment;
        runsAs = "the launchd daemon org.nixos.policy-service (sudo launchctl print system/org.nixos.policy-service)";
      })
    ];

    launchd.daemons.policy-service = {
      # launchd cannot read an environment file: source it in a shell, then exec.
      command =
        if cfg.environmentFile == null then
          executable
        else
          "/bin/sh -c ${lib.escapeShellArg "set -a; . ${lib.escapeShellArg cfg.environmentFile}; set +a; exec ${executable}"}";
      environment = runtime.environment;
      serviceConfig = {
        KeepAlive = true;
        RunAtLoad = true;
        # Wait 10 s between restarts of a crashing service.
        ThrottleInterval = 10;
        UserName = userName;
        GroupName = userName;
        WorkingDirectory = workingDirectory;
        StandardOutPath = logFile;
        StandardErrorPath = errorLogFile;
        # 0077 (octal): plists have no octal numbers.
        Umask = 63;
      };
    };
  };
}
