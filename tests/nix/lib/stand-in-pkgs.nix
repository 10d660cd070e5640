# A stand-in for a nixpkgs 26.05 package set, enough to evaluate our modules without nixpkgs:
# packages are fake derivations (a name and a plausible store path; nothing is built).
# `buildNpmPackage` records its arguments so tests can inspect service/package.nix.
# Every assumption about nixpkgs made here is listed with its source in ./README.md.
#
# `config` is nixpkgs' config (`import nixpkgs { config = …; }`, or a NixOS configuration's
# nixpkgs.config): permittedInsecurePackages and allowInsecurePredicate are honoured as
# pkgs/stdenv/generic/check-meta.nix does.
{
  lib,
  system ? "x86_64-linux",
  config ? { },
}:
let
  # check-meta.nix: getNameWithVersion, isMarkedInsecure, hasDisallowedInsecure.
  # (NIXPKGS_ALLOW_INSECURE=1 is not modelled: pure flake evaluation never sees it.)
  getNameWithVersion = attrs: attrs.name or "${attrs.pname}-${attrs.version}";
  isMarkedInsecure = attrs: (attrs.meta.knownVulnerabilities or [ ]) != [ ];
  insecurePermitted =
    if config ? allowInsecurePredicate then
      config.allowInsecurePredicate
    else if config ? permittedInsecurePackages then
      attrs: lib.elem (getNameWithVersion attrs) config.permittedInsecurePackages
    else
      _: false;
  # Like mkDerivation's validity check, this fires when the derivation is used (its
  # outPath or drvPath is forced), not when the attribute is merely looked up.
  assertValid =
    attrs:
    if isMarkedInsecure attrs && !insecurePermitted attrs then
      throw ''
        Package ‘${getNameWithVersion attrs}’ is marked as insecure, refusing to evaluate.

        Known issues:
        ${lib.concatMapStrings (v: " - ${v}\n") attrs.meta.knownVulnerabilities}
        (stand-in for pkgs/stdenv/generic/check-meta.nix: permit it with
        nixpkgs.config.permittedInsecurePackages = [ "${getNameWithVersion attrs}" ];)''
    else
      true;
  # A store path looks like /nix/store/<32 chars of nix-base32>-<name>.
  fakeHash =
    name:
    lib.replaceStrings [ "e" "o" "t" "u" ] [ "0" "1" "2" "3" ] (
      builtins.substring 0 32 (builtins.hashString "sha256" name)
    );
  # `inputs`: derivations this one is built from; using it uses them (a refused input
  # refuses the whole build, as a real derivation's drvPath depends on its inputs').
  fakeDrvWith =
    {
      name,
      extra ? { },
      inputs ? [ ],
    }:
    lib.fix (
      drv:
      let
        valid = builtins.seq (assertValid drv) (
          lib.foldl' (acc: input: builtins.seq input.drvPath acc) true inputs
        );
      in
      {
        type = "derivation";
        inherit name;
        meta = { };
        outputs = [ "out" ];
        outputName = "out";
        out = drv;
      }
      // extra
      // {
        outPath = builtins.seq valid "${builtins.storeDir}/${fakeHash name}-${name}";
        drvPath = builtins.seq valid "${builtins.storeDir}/${fakeHash "drv-${name}"}-${name}.drv";
      }
    );
  fakeDrv = name: extra: fakeDrvWith { inherit name extra; };
  fakePackage =
    pname: mainProgram:
    fakeDrv pname {
      inherit pname;
      meta = {
        inherit mainProgram;
      };
    };
  # pkgs/development/web/nodejs: `nodejs_<major>`, meta.mainProgram "node",
  # meta.knownVulnerabilities non-empty for an end-of-life major.
  fakeNodejs =
    version: knownVulnerabilities:
    fakeDrv "nodejs-${version}" {
      pname = "nodejs";
      inherit version;
      meta = {
        mainProgram = "node";
        inherit knownVulnerabilities;
      };
    };
  endOfLife = [
    "This NodeJS release has reached its end of life. See https://nodejs.org/en/about/releases/."
  ];
  jsonValue =
    let
      valueType =
        lib.types.nullOr (
          lib.types.oneOf [
            lib.types.bool
            lib.types.int
            lib.types.float
            lib.types.str
            lib.types.path
            (lib.types.attrsOf valueType)
            (lib.types.listOf valueType)
          ]
        )
        // {
          description = "JSON value";
        };
    in
    valueType;
  self = {
    _type = "pkgs";
    inherit lib;
    appendOverlays = _: self;
    __splicedPackages = self;
    stdenv = {
      hostPlatform = lib.systems.elaborate system;
      buildPlatform = lib.systems.elaborate system;
      shell = "${self.bash}/bin/bash";
      isLinux = self.stdenv.hostPlatform.isLinux;
      isDarwin = self.stdenv.hostPlatform.isDarwin;
    };
    callPackage = lib.callPackageWith self;

    writeText = name: text: fakeDrv name { inherit text; };
    writeTextFile = { name, ... }@args: fakeDrv name args;
    writeScript = name: text: fakeDrv name { inherit text; };
    writeShellScript = name: text: fakeDrv name { inherit text; };
    writeScriptBin =
      name: text:
      fakeDrv name {
        inherit text;
        meta.mainProgram = name;
      };
    writeShellApplication =
      { name, ... }@args:
      fakeDrv name (
        args
        // {
          meta.mainProgram = name;
        }
      );
    # trivial-builders: $out/bin/<name>, meta.mainProgram = name.
    writeShellScriptBin =
      name: text:
      fakeDrv name {
        inherit text;
        meta.mainProgram = name;
      };
    runCommand =
      name: env: buildCommand:
      fakeDrv name (env // { inherit buildCommand; });
    runCommandLocal = self.runCommand;
    buildEnv = { name, ... }@args: fakeDrv name args;
    mkShell =
      args:
      fakeDrvWith {
        name = args.name or "nix-shell";
        inputs = args.packages or [ ];
        extra = args;
      };
    symlinkJoin = { name, ... }@args: fakeDrv name args;
    formats.json =
      { }:
      {
        type = jsonValue;
        generate = name: value: self.writeText name (builtins.toJSON value);
      };

    # build-npm-package/default.nix: `nodejs ? topLevelArgs.nodejs` (the default Node);
    # the package is built with it (nativeBuildInputs and buildInputs).
    buildNpmPackage =
      args:
      let
        nodejs = args.nodejs or self.nodejs;
      in
      fakeDrvWith {
        name = "${args.pname}-${args.version}";
        inputs = [ nodejs ] ++ args.nativeCheckInputs or [ ];
        extra = {
          inherit (args) pname version meta;
          # Everything buildNpmPackage was given, for tests of service/package.nix.
          passthru.npmArgs = args;
        };
      };
    # In nixpkgs importNpmLock is callable and carries its own config hook.
    importNpmLock = {
      __functor = _: args: fakeDrv "npm-deps" { inherit (args) npmRoot; };
      npmConfigHook = fakeDrv "npm-config-hook" { };
    };
    # 26.05: Node 20 is end of life and marked insecure (NixOS/nixpkgs#511784); 22 and 24
    # are maintained; the default `nodejs` is 24; nodejs_18 is gone (an alias that throws).
    nodejs_20 = fakeNodejs "20.20.2" endOfLife;
    nodejs_22 = fakeNodejs "22.22.0" [ ];
    nodejs_24 = fakeNodejs "24.13.0" [ ];
    nodejs = self.nodejs_24;
    # pkgs/top-level/aliases.nix
    nodejs_18 = throw "Node.js 18.x has reached End-Of-Life and has been removed";
    nats-server = fakePackage "nats-server-2.14.9" "nats-server";
    natscli = fakePackage "natscli-0.5.0" "nats";
    coreutils = fakePackage "coreutils-9.5" "coreutils";
    jq = fakePackage "jq-1.7.1" "jq";
    nixfmt = fakePackage "nixfmt" "nixfmt";
    deadnix = fakePackage "deadnix" "deadnix";
    # nixpkgs' own source (nix-darwin's darwin-uninstaller reads it; never read here).
    path = builtins.toFile "fake-nixpkgs-path" "";
    # Packages nix-darwin's own modules refer to while building the activation script.
    openssh = fakePackage "openssh" "ssh";
    gnused = fakePackage "gnused" "sed";
    rsync = fakePackage "rsync" "rsync";
    gnugrep = fakePackage "gnugrep" "grep";
    bash = fakePackage "bash" "bash";
    nix = fakePackage "nix-2.28.4" "nix";
    # …and its system packages (nix-tools, darwin-uninstaller, listed in
    # environment.systemPackages; only their names are read here).
    git = fakePackage "git" "git";
    zsh = fakePackage "zsh" "zsh";
    nix-zsh-completions = fakePackage "nix-zsh-completions" "nix-zsh-completions";
    bashInteractive = fakePackage "bash-interactive" "bash";
    nix-info = fakePackage "nix-info" "nix-info";
    texinfoInteractive = fakePackage "texinfo-interactive" "info";
    replaceVarsWith =
      {
        name ? "${args.pname}-${args.version}",
        ...
      }@args:
      fakeDrv name args;
  };
in
self
