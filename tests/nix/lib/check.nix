# Small assertion helpers for the evaluation cases (../cases/*.nix). Each returns
# { ok; detail; }: detail says what differed, for the `not ok` line.
{ lib }:
let
  show =
    value:
    let
      r = builtins.tryEval (builtins.toJSON value);
    in
    if r.success then r.value else "<unprintable ${builtins.typeOf value}>";
  result = ok: detail: {
    inherit ok;
    detail = if ok then "" else detail;
  };
in
rec {
  inherit show;
  # actual == expected
  eq = actual: expected: result (actual == expected) "expected ${show expected}, got ${show actual}";
  # every key of `expected` is in `actual` with that value
  hasAll =
    actual: expected:
    let
      wrong = lib.filterAttrs (k: v: !(actual ? ${k}) || actual.${k} != v) expected;
    in
    result (wrong == { })
      "differs at ${show (lib.attrNames wrong)}: expected ${show wrong}, got ${
        show (lib.filterAttrs (k: _: wrong ? ${k}) actual)
      }";
  isTrue = cond: detail: result cond detail;
  contains =
    haystack: needle:
    result (lib.hasInfix needle haystack) "${show needle} not found in ${show haystack}";
  lacks =
    haystack: needle: result (!lib.hasInfix needle haystack) "${show needle} unexpectedly found";
  # Evaluating `value` fully must fail (a refused configuration), and, when given, with a
  # message containing `pattern` is not checkable here (tryEval hides it): callers force
  # the narrowest value that only the bad setting can break.
  refused =
    value:
    let
      r = builtins.tryEval (builtins.deepSeq value value);
    in
    result (!r.success) "evaluated without error to ${show (if r.success then r.value else null)}";
  accepted =
    value:
    let
      r = builtins.tryEval (builtins.deepSeq value value);
    in
    result r.success "evaluation failed (run with --show-trace to see why)";
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  noFailedAssertions =
    config:
    let
      failed = failedAssertions config;
    in
    result (failed == [ ]) "failed assertions: ${show failed}";
}
