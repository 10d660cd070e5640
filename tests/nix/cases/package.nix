# service/package.nix, called with a stand-in buildNpmPackage that records its arguments
# (offline only; the flake check `package` builds the real thing).
{
  lib,
  repo,
  check,
  standIn,
  ...
}:
if !standIn then
  { }
else
  let
    pkgs = import ../lib/stand-in-pkgs.nix { inherit lib; };
    package = pkgs.callPackage (repo + "/service/package.nix") { };
    # v0.9.0's package.nix passed `nodejs = nodejs_20`: the same file given Node 20.
    withNode20 =
      pkgs': (pkgs'.callPackage (repo + "/service/package.nix") { nodejs = pkgs'.nodejs_20; }).drvPath;
    permitting =
      config:
      import ../lib/stand-in-pkgs.nix {
        inherit lib;
        inherit config;
      };
    args = package.passthru.npmArgs;
    packageJson = lib.importJSON (repo + "/service/package.json");
  in
  {
    "package: name and version from service/package.json" = check.eq {
      name = args.pname;
      inherit (args) version;
    } { inherit (packageJson) name version; };
    "package: importNpmLock deps and its own config hook" = check.isTrue (
      args.npmDeps.npmRoot == repo + "/service" && args.npmConfigHook == pkgs.importNpmLock.npmConfigHook
    ) "npmDeps/npmConfigHook are not importNpmLock's";
    "package: nixpkgs' default nodejs (24), mainProgram policy-service, bin declared in package.json" =
      check.eq
        {
          nodejs = args.nodejs.name;
          isDefault = args.nodejs == pkgs.nodejs;
          inherit (args.meta) mainProgram;
          bin = packageJson.bin;
        }
        {
          nodejs = "nodejs-24.13.0";
          isDefault = true;
          mainProgram = "policy-service";
          bin.policy-service = "dist/main.js";
        };
    "package: passes nixpkgs' insecure-package check (its derivation evaluates)" =
      check.accepted package.drvPath;
    "package: on nodejs_20 (v0.9.0's package.nix) it is refused as insecure" = check.refused (
      withNode20 pkgs
    );
    "package: on nodejs_20 accepted only when permitted (permittedInsecurePackages, allowInsecurePredicate)" =
      check.eq
        {
          byName =
            (builtins.tryEval (
              withNode20 (permitting {
                permittedInsecurePackages = [ "nodejs-20.20.2" ];
              })
            )).success;
          byOtherName =
            (builtins.tryEval (
              withNode20 (permitting {
                permittedInsecurePackages = [ "nodejs-20.20.1" ];
              })
            )).success;
          byPredicate =
            (builtins.tryEval (
              withNode20 (permitting {
                allowInsecurePredicate = p: p.pname == "nodejs";
              })
            )).success;
        }
        {
          byName = true;
          byOtherName = false;
          byPredicate = true;
        };
    "package: check phase runs unit and integration tests with nats-server" = check.isTrue (
      args.doCheck
      && lib.elem pkgs.nats-server args.nativeCheckInputs
      && lib.hasInfix "npm run test:unit" args.checkPhase
      && lib.hasInfix "npm run test:integration" args.checkPhase
      && lib.hasInfix "NATS_SERVER_BIN=${pkgs.nats-server}/bin/nats-server" args.checkPhase
      && lib.elem pkgs.natscli args.nativeCheckInputs
      && lib.hasInfix "NATS_CLI_BIN=${pkgs.natscli}/bin/nats" args.checkPhase
      && packageJson.scripts ? "test:unit"
      && packageJson.scripts ? "test:integration"
    ) "checkPhase:\n${args.checkPhase}";
    "package: the check phase's test scripts give node --test files or globs, not directories (Node >= 22)" =
      let
        # `node --test DIR/` works on Node 20 only: from Node 22 a directory argument is loaded
        # as a module (MODULE_NOT_FOUND), and the check phase runs with the package's Node.
        testArguments =
          script:
          lib.concatMap (
            segment:
            let
              words = lib.filter (w: w != "") (lib.splitString " " segment);
              afterTest = lib.drop 2 words;
            in
            if
              lib.take 2 words == [
                "node"
                "--test"
              ]
            then
              map (lib.replaceStrings [ "'" "\"" ] [ "" "" ]) (lib.filter (w: !lib.hasPrefix "-" w) afterTest)
            else
              [ ]
          ) (map lib.trim (lib.splitString "&&" script));
        isDirectory = arg: lib.hasSuffix "/" arg || !(lib.hasInfix "*" arg || lib.hasSuffix ".js" arg);
        directories = lib.filter isDirectory (
          lib.concatMap (name: testArguments packageJson.scripts.${name}) [
            "test:unit"
            "test:integration"
          ]
        );
      in
      check.eq directories [ ];
    "package: package.json engines admit the Node the package is built with" =
      let
        range = packageJson.engines.node or "";
        lowest = builtins.match ">= *([0-9][0-9.]*)" range;
      in
      check.isTrue (
        lowest != null && lib.versionAtLeast args.nodejs.version (lib.head lowest)
      ) "engines.node is ${builtins.toJSON range}, the package builds with Node ${args.nodejs.version}";
    "package: npm pack ships dist/ (files field)" = check.isTrue (lib.elem "dist" (
      packageJson.files or [ ]
    )) "package.json `files` lacks dist: npm pack would drop the build";
  }
