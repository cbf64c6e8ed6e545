# The head commit of the demo pull request: changes app and prefer-local,
# adds flaky, fetched and added, removes retired; the rest is unchanged.
let
  inherit (import ./lib.nix) step script system salt;
in rec {
  core = step "demo-core" [ ] { };
  lib = step "demo-lib" [ core ] { };
  # Changed: a different build of the same attribute.
  app = step "demo-app-v2" [ lib ] { };

  left = step "demo-left" [ core ] { };
  right = step "demo-right" [ core ] { };
  top = step "demo-top" [ left right ] { };

  broken = script "demo-broken" [ core ] ''
    echo "compiling demo-broken"
    echo "error: demo-broken does not compile" >&2
    exit 2
  '';
  usesBroken = step "demo-uses-broken" [ broken ] { };

  silent = script "demo-silent" [ ] ''
    i=0
    while :; do i=$((i+1)); done
  '';

  evalError = throw "demo: this attribute does not evaluate";

  # New: fails the first time, succeeds on the automatic retry. (It keeps
  # a marker in /tmp, which works because Debian's Nix builds without a
  # sandbox.)
  flaky = script "demo-flaky" [ core ] ''
    marker=/tmp/ekaci-demo-flaky-${salt}
    if [ -e "$marker" ]; then
      echo "second try: fine"
      echo flaky > "$out"
    else
      : > "$marker"
      echo "first try: failing on purpose" >&2
      exit 1
    fi
  '';

  # New: a fixed-output derivation (routed to the FOD pool).
  fetched = derivation {
    name = "demo-fetched";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "printf 'fod-%s' '${salt}' > $out" ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "@FODHASH@";
  };

  # New: preferLocalBuild (routed to the local builder).
  preferLocal = step "demo-prefer-local" [ fetched ] { preferLocalBuild = true; };

  # New: a set Hydra-style recursion enters.
  extra = {
    recurseForDerivations = true;
    added = step "demo-added" [ app top ] { };
  };
}
