package nixbuild

import "errors"

var (
	// ErrNoNixBuild means nix-build is not on PATH; nothing was started.
	ErrNoNixBuild = errors.New("nix-build not found")
	// ErrBadOptions means Options cannot be turned into a command line.
	ErrBadOptions = errors.New("bad nixbuild options")
)
