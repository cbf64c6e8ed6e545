package nixbuild

import "errors"

var (
	// ErrNoNix means nix-store is not on PATH; nothing was started.
	ErrNoNix = errors.New("nix-store not found")
	// ErrBadOptions means Options or a job cannot be turned into a
	// command line.
	ErrBadOptions = errors.New("bad nixbuild options")
)
