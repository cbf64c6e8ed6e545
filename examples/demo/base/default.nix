# The base commit of the demo pull request.
let
  inherit (import ./lib.nix) step script;
in rec {
  # A chain: core <- lib <- app.
  core = step "demo-core" [ ] { };
  lib = step "demo-lib" [ core ] { };
  app = step "demo-app" [ lib ] { };

  # A diamond: core <- left, right <- top.
  left = step "demo-left" [ core ] { };
  right = step "demo-right" [ core ] { };
  top = step "demo-top" [ left right ] { };

  # Already broken before this pull request: it fails, and so does what
  # depends on it, but as the PR does not touch them they do not decide.
  broken = script "demo-broken" [ core ] ''
    echo "compiling demo-broken"
    echo "error: demo-broken does not compile" >&2
    exit 2
  '';
  usesBroken = step "demo-uses-broken" [ broken ] { };

  # Already silent before: prints nothing, so the no-output timeout stops it.
  silent = script "demo-silent" [ ] ''
    i=0
    while :; do i=$((i+1)); done
  '';

  # Already failing to evaluate before.
  evalError = throw "demo: this attribute does not evaluate";

  # Removed by the pull request.
  retired = step "demo-retired" [ core ] { };
}
