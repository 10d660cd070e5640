# Secrets never reach the Nix store: with every secret option set (one authentication method at a
# time, plus the TLS files and an environment file), the rendered NixOS unit (environment and
# serviceConfig) and the nix-darwin plist hold the configured *paths* only. The files do not exist
# at evaluation time, so a module that read one (builtins.readFile, a path copied to the store)
# would fail to evaluate here. Path literals, which Nix would copy into the store, are refused
# for every secret option on both platforms. The service's own side (no secret in logs, argv or
# replies) is service/test/integration/auth-methods.test.ts.
{
  lib,
  flake,
  nixosSystem,
  darwinSystem,
  check,
  ...
}:
let
  dir = "/nonexistent/policy-service-secrets-test";
  tlsFiles = {
    caFile = "${dir}/ca.pem";
    certFile = "${dir}/client.pem";
    keyFile = "${dir}/client-key.pem";
  };
  environmentFile = "${dir}/policy.env";
  # One authentication method per configuration (the module refuses combinations).
  methods = {
    creds.credentialsFile = "${dir}/policy.creds";
    nkey.nkeySeedFile = "${dir}/policy.nk";
    password = {
      natsUser = "policy-service";
      passwordFile = "${dir}/password";
    };
    token.tokenFile = "${dir}/token";
  };
  secretOptions = [
    "credentialsFile"
    "nkeySeedFile"
    "passwordFile"
    "tokenFile"
  ];
  settingsOf =
    method:
    methods.${method}
    // {
      enable = true;
      natsUrl = "tls://localhost:4222";
      tls = tlsFiles;
      inherit environmentFile;
    };
  # Every configured path of a method's settings (the strings that may appear, and only as paths).
  pathsOf =
    method:
    lib.filter (lib.hasPrefix dir) (
      lib.attrValues (removeAttrs methods.${method} [ "natsUser" ])
      ++ lib.attrValues tlsFiles
      ++ [ environmentFile ]
    );
  storePrefix = "${builtins.storeDir}/";
  # What remains of `text` after removing the package's own store path: must hold no store path.
  foreignStorePaths =
    package: text:
    let
      rest = lib.replaceStrings [ "${package}" ] [ "" ] text;
    in
    map (part: lib.head (builtins.match "([A-Za-z0-9+._?=-]*).*" part)) (
      lib.tail (lib.splitString storePrefix rest)
    );
  pathLiteral = ./secrets-not-in-store.nix;

  nixos =
    settings:
    let
      config =
        (nixosSystem {
          modules = [
            flake.leafModule
            { services.policy-service = settings; }
          ];
        }).config;
      unit = config.systemd.services.policy-service;
    in
    {
      inherit (unit) environment serviceConfig;
      inherit (config.services.policy-service) package;
      assertions = check.failedAssertions config;
    };

  darwin =
    settings:
    let
      config =
        (darwinSystem {
          modules = [
            flake.leafModule
            { services.policy-service = settings; }
          ];
        }).config;
    in
    {
      plist = config.environment.launchDaemons."org.nixos.policy-service.plist".text;
      inherit (config.services.policy-service) package;
      assertions = check.failedAssertions config;
    };

  nixosCases = lib.concatMapAttrs (
    method: _:
    let
      r = nixos (settingsOf method);
      # Without PATH, which the real NixOS systemd module adds to every unit (coreutils, systemd, …).
      unitText = builtins.toJSON {
        environment = removeAttrs r.environment [ "PATH" ];
        inherit (r) serviceConfig;
      };
      fileVars = lib.filterAttrs (name: _: lib.hasSuffix "_FILE" name) r.environment;
    in
    {
      "NixOS, ${method}: the secret files are absent at evaluation (a module reading one could not evaluate)" =
        check.isTrue (
          !lib.any builtins.pathExists (pathsOf method)
        ) "a test path exists: ${toString (pathsOf method)}";
      "NixOS, ${method}: the configuration holds (no failed assertion)" = check.eq r.assertions [ ];
      "NixOS, ${method}: every *_FILE variable is $CREDENTIALS_DIRECTORY/<name>" = check.isTrue (
        fileVars != { } && lib.all (lib.hasPrefix "$CREDENTIALS_DIRECTORY/") (lib.attrValues fileVars)
      ) "environment: ${builtins.toJSON r.environment}";
      "NixOS, ${method}: the environment names no secret path" = check.isTrue (
        !lib.any (p: lib.hasInfix p (builtins.toJSON r.environment)) (pathsOf method)
      ) "environment: ${builtins.toJSON r.environment}";
      "NixOS, ${method}: LoadCredential/EnvironmentFile carry exactly the configured paths" = check.eq (
        lib.sort
        lib.lessThan
        (
          map (entry: lib.last (lib.splitString ":" entry)) r.serviceConfig.LoadCredential
          ++ r.serviceConfig.EnvironmentFile
        )
      ) (lib.sort lib.lessThan (pathsOf method));
      "NixOS, ${method}: no store path in the unit but the package's" =
        check.eq (foreignStorePaths r.package unitText)
          [ ];
    }
  ) methods;

  darwinCases =
    if darwinSystem == null then
      {
        "nix-darwin plist" = {
          skip = "no nix-darwin evaluation here (offline: set POLICY_SERVICE_NIX_DARWIN; flake checks: darwin systems only)";
        };
      }
    else
      lib.concatMapAttrs (
        method: _:
        let
          r = darwin (settingsOf method);
        in
        {
          "nix-darwin, ${method}: the configuration holds (no failed assertion)" = check.eq r.assertions [ ];
          "nix-darwin, ${method}: the plist passes each secret as its path" = check.isTrue (lib.all (
            p: lib.hasInfix p r.plist
          ) (pathsOf method)) "plist:\n${r.plist}";
          "nix-darwin, ${method}: no store path in the plist but the package's" =
            check.eq (foreignStorePaths r.package r.plist)
              [ ];
        }
      ) methods;

  refusals = lib.listToAttrs (
    lib.concatMap (
      option:
      let
        settings = {
          enable = true;
        }
        // lib.setAttrByPath (lib.splitString "." option) pathLiteral
        // lib.optionalAttrs (option == "passwordFile") { natsUser = "policy-service"; };
      in
      [
        (lib.nameValuePair "NixOS: ${option} as a path literal is refused" (
          check.refused (
            let
              r = nixos settings;
            in
            [
              r.environment
              r.serviceConfig.LoadCredential
            ]
          )
        ))
      ]
      ++ lib.optional (darwinSystem != null) (
        lib.nameValuePair "nix-darwin: ${option} as a path literal is refused" (
          check.refused (darwin settings).plist
        )
      )
    ) (secretOptions ++ [ "tls.keyFile" ])
  );
in
nixosCases // darwinCases // refusals
