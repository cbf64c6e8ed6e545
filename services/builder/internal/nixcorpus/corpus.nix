# The differential corpus: small offline derivations of the kinds real
# repositories hold, each new to the store for every salt. Attributes whose
# name starts with "dep" are prerequisites (built before a run), not cases.
{ salt, flatHash, recHash }:
let
  sys = builtins.currentSystem;
  mk = name: script: attrs: derivation ({
    inherit name salt;
    system = sys;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  } // attrs);
  drvOf = d: builtins.unsafeDiscardStringContext d.drvPath;
  wrong = "0000000000000000000000000000000000000000000000000000000000000000";
  forge = ''
    i=0
    for v in $victims; do
      i=$((i+1))
      printf '@nix {"action":"msg","level":0,"msg":"builder for \047%s\047 failed with exit code 1"}\n' "$v"
      printf '@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"error: builder for \047%s\047 failed with exit code 1","raw_msg":"builder for \047%s\047 failed with exit code 1"}\n' "$v" "$v"
      printf '@nix {"action":"msg","level":0,"msg":"building of \047%s!*\047 from .drv file timed out after 2 seconds of silence"}\n' "$v"
      printf '@nix {"action":"msg","level":0,"msg":"hash mismatch in fixed-output derivation \047%s\047"}\n' "$v"
      printf '@nix {"action":"start","id":7%d,"level":3,"type":105,"text":"building \047%s\047","fields":["%s","",1,1]}\n' "$i" "$v" "$v"
      printf '@nix {"action":"result","id":7%d,"type":101,"fields":["forged line for %s"]}\n' "$i" "$v"
      printf '@nix {"action":"stop","id":7%d}\n' "$i"
    done
    printf '@nix {"action":"result","id":1,"type":105,"fields":[9,9,0,9]}\n'
    printf '@nix {"action":"start","id":99,"level":0,"type":104,"text":"","fields":[]}\n'
    printf '@nix {"action":"result","id":99,"type":105,"fields":[9,9,0,9]}\n'
  '';
  victimsOf = ds: map drvOf ds;
in rec {
  # Prerequisites.
  depA = mk "depA" "echo a > $out" { };
  depB = mk "depB" "echo ${depA} > $out" { };
  depMulti = mk "depMulti" "echo 1 > $first; echo 2 > $second" { outputs = [ "first" "second" ]; };
  depPrebuilt = mk "prebuilt" "echo already > $out" { };

  # Cases.
  ok = mk "ok" "echo fine; echo ok > $out" { };
  selfRef = mk "selfRef" "echo $out > $out" { };
  exit1 = mk "exit1" "echo about to fail; exit 1" { };
  exit2 = mk "exit2" "exit 2" { };
  exit42 = mk "exit42" "echo forty-two >&2; exit 42" { };
  killed = mk "killed" "echo started; kill -9 $$" { };
  killedTerm = mk "killedTerm" "echo started; kill -TERM $$; sleep 5" { };
  noOutput = mk "noOutput" "echo built nothing" { };
  fodFlatOK = mk "fodFlatOK" "printf %s \"fod-flat-$salt\" > $out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = flatHash; };
  fodFlatBad = mk "fodFlatBad" "printf %s \"fod-flat-bad-$salt\" > $out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = wrong; };
  fodRecOK = mk "fodRecOK" "printf %s \"fod-rec-$salt\" > $out" {
    outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = recHash; };
  fodRecBad = mk "fodRecBad" "mkdir $out; printf %s \"fod-rec-bad-$salt\" > $out/f" {
    outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = wrong; };
  multi = mk "multi" "echo 1 > $first; echo 2 > $second" { outputs = [ "first" "second" ]; };
  multiMissing = mk "multiMissing" "echo 1 > $first" { outputs = [ "first" "second" ]; };
  usesSecond = mk "usesSecond" "cat ${depMulti.second} > $out" { };
  allowedRefsPass = mk "allowedRefsPass" "echo ${depA} > $out" { allowedReferences = [ depA ]; };
  allowedRefsFail = mk "allowedRefsFail" "echo ${depA} > $out" { allowedReferences = [ ]; };
  disallowedRefsPass = mk "disallowedRefsPass" "echo ${depB} > $out" { disallowedReferences = [ depA ]; };
  disallowedRefsFail = mk "disallowedRefsFail" "echo ${depA} > $out" { disallowedReferences = [ depA ]; };
  allowedReqsPass = mk "allowedReqsPass" "echo ${depB} > $out" { allowedRequisites = [ depA depB ]; };
  allowedReqsFail = mk "allowedReqsFail" "echo ${depB} > $out" { allowedRequisites = [ depB ]; };
  disallowedReqsPass = mk "disallowedReqsPass" "echo ${depA} > $out" { disallowedRequisites = [ depB ]; };
  disallowedReqsFail = mk "disallowedReqsFail" "echo ${depB} > $out" { disallowedRequisites = [ depA ]; };
  outputCycle = mk "outputCycle" "echo $b > $a; echo $a > $b" { outputs = [ "a" "b" ]; };
  longLine = mk "longLine" "head -c 5000000 /dev/zero | tr '\\0' a; echo; echo after; echo ok > $out" { };
  longLineFail = mk "longLineFail" "head -c 5000000 /dev/zero | tr '\\0' b; echo; echo after; exit 1" { };
  silent = mk "silent" "echo start; sleep 60" { };
  prebuilt = depPrebuilt;
  forger = mk "forger" (forge + "echo forged > $out") {
    victims = victimsOf [ ok selfRef exit1 exit42 killed fodFlatOK fodFlatBad fodRecOK multi usesSecond
      allowedRefsPass allowedReqsFail outputCycle longLine silent prebuilt depA ];
  };
  forgerFails = mk "forgerFails" (forge + "exit 1") {
    victims = victimsOf [ ok selfRef exit2 fodFlatOK fodRecBad multi multiMissing disallowedRefsPass
      disallowedRefsFail allowedReqsPass longLineFail silent prebuilt forger ];
  };
}
