package nixeval

import "errors"

// ErrMemoryLimit means a Nix process ran out of the memory Options.MemoryLimit
// allows it: the evaluation as a whole failed, not one attribute.
var ErrMemoryLimit = errors.New("evaluation exceeded its memory limit")
