# A stand-in for a nixpkgs package set, enough to evaluate our modules without nixpkgs:
# packages are fake derivations (a name and a plausible store path; nothing is built).
# `buildNpmPackage` records its arguments so tests can inspect service/package.nix.
{
  lib,
  system ? "x86_64-linux",
}:
let
  # A store path looks like /nix/store/<32 chars of nix-base32>-<name>.
  fakeHash =
    name:
    lib.replaceStrings [ "e" "o" "t" "u" ] [ "0" "1" "2" "3" ] (
      builtins.substring 0 32 (builtins.hashString "sha256" name)
    );
  fakeDrv =
    name: extra:
    lib.fix (drv: {
      type = "derivation";
      inherit name;
      outPath = "${builtins.storeDir}/${fakeHash name}-${name}";
      drvPath = "${builtins.storeDir}/${fakeHash "drv-${name}"}-${name}.drv";
      meta = { };
      outputs = [ "out" ];
      outputName = "out";
      out = drv;
    }
    // extra);
  fakePackage =
    pname: mainProgram:
    fakeDrv pname {
      inherit pname;
      meta = {
        inherit mainProgram;
      };
    };
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
    writeTextFile = { name, text, ... }@args: fakeDrv name args;
    writeScript = name: text: fakeDrv name { inherit text; };
    writeShellScript = name: text: fakeDrv name { inherit text; };
    runCommand =
      name: env: buildCommand:
      fakeDrv name (env // { inherit buildCommand; });
    runCommandLocal = self.runCommand;
    buildEnv = { name, ... }@args: fakeDrv name args;
    symlinkJoin = { name, ... }@args: fakeDrv name args;
    formats.json =
      { }:
      {
        type = jsonValue;
        generate = name: value: self.writeText name (builtins.toJSON value);
      };

    buildNpmPackage =
      args:
      fakeDrv "${args.pname}-${args.version}" {
        inherit (args) pname version meta;
        # Everything buildNpmPackage was given, for tests of service/package.nix.
        passthru.npmArgs = args;
      };
    # In nixpkgs importNpmLock is callable and carries its own config hook.
    importNpmLock = {
      __functor =
        _: args:
        fakeDrv "npm-deps" { inherit (args) npmRoot; };
      npmConfigHook = fakeDrv "npm-config-hook" { };
    };
    nodejs_20 = fakePackage "nodejs-20.20.2" "node";
    nodejs = self.nodejs_20;
    nats-server = fakePackage "nats-server-2.14.9" "nats-server";
    natscli = fakePackage "natscli-0.5.0" "nats";
    coreutils = fakePackage "coreutils-9.5" "coreutils";
    jq = fakePackage "jq-1.7.1" "jq";
    # Packages nix-darwin's own modules refer to while building the activation script.
    openssh = fakePackage "openssh" "ssh";
    gnused = fakePackage "gnused" "sed";
    rsync = fakePackage "rsync" "rsync";
    gnugrep = fakePackage "gnugrep" "grep";
    bash = fakePackage "bash" "bash";
    nix = fakePackage "nix-2.28.4" "nix";
  };
in
self
