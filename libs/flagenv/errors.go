package flagenv

import "errors"

var (
	// ErrEnvValue means an environment variable holds a value its flag
	// does not accept.
	ErrEnvValue = errors.New("invalid value in environment")
	// ErrEnvConflict means a secret is given both directly and as a file.
	ErrEnvConflict = errors.New("secret set twice")
	// ErrSecretFile means a secret's _FILE cannot be read.
	ErrSecretFile = errors.New("read secret file")
)
