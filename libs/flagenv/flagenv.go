package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Parse parses args into fs, then sets every flag not given on the command
// line from its environment variable (see the package comment), and sets
// fs.Usage to list each flag's variable. Define every flag, and mark
// secrets with Secret, before calling it.
//
// Errors follow fs's ErrorHandling, as fs.Parse does: with ContinueOnError
// they are returned (flag.ErrHelp for -h), with ExitOnError they are
// printed and the process exits with status 2, with PanicOnError they
// panic.
func Parse(fs *flag.FlagSet, args []string, prefix string) error {
	fs.Usage = Usage(fs, prefix)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fromEnv(fs, prefix); err != nil {
		switch fs.ErrorHandling() {
		case flag.ExitOnError:
			fmt.Fprintln(fs.Output(), err)
			os.Exit(2)
		case flag.PanicOnError:
			panic(err)
		}
		return err
	}
	return nil
}

// EnvName is the variable that may set flag name: prefix "EKACI" and flag
// "nats-url" give EKACI_NATS_URL. An empty prefix adds none.
func EnvName(prefix, name string) string {
	up := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, name)
	if prefix == "" {
		return up
	}
	return strings.TrimSuffix(prefix, "_") + "_" + up
}

// fromEnv sets the flags the command line left alone.
func fromEnv(fs *flag.FlagSet, prefix string) error {
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	return FromEnv(fs, prefix, func(name string) bool { return explicit[name] })
}

// FromEnv sets every flag of fs for which given returns false from its
// environment variable, as Parse does after parsing, for command lines
// parsed by something else (cobra's pflag, which sets fs's values but not
// what fs.Visit sees). Errors are returned, whatever fs's ErrorHandling.
func FromEnv(fs *flag.FlagSet, prefix string, given func(name string) bool) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given(f.Name) {
			return
		}
		if err := setFromEnv(fs, f, prefix); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

func setFromEnv(fs *flag.FlagSet, f *flag.Flag, prefix string) error {
	name := EnvName(prefix, f.Name)
	val := os.Getenv(name)
	if !isSecret(f) {
		if val == "" {
			return nil
		}
		if err := fs.Set(f.Name, val); err != nil {
			return fmt.Errorf("%w: %s=%q for -%s: %w", ErrEnvValue, name, val, f.Name, err)
		}
		return nil
	}

	fileVar := name + "_FILE"
	path := os.Getenv(fileVar)
	switch {
	case val != "" && path != "":
		return fmt.Errorf("%w: -%s: both %s and %s are set; unset one", ErrEnvConflict, f.Name, name, fileVar)
	case val != "":
		if err := fs.Set(f.Name, val); err != nil {
			// The value is a secret: name the variable, never echo it.
			return fmt.Errorf("%w: %s for -%s: %w", ErrEnvValue, name, f.Name, redact(err, val))
		}
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%w %s=%s for -%s: %w", ErrSecretFile, fileVar, path, f.Name, err)
		}
		if err := fs.Set(f.Name, strings.TrimRight(string(b), "\r\n")); err != nil {
			return fmt.Errorf("%w: contents of %s=%s for -%s: %w", ErrEnvValue, fileVar, path, f.Name, redact(err, string(b)))
		}
	}
	return nil
}

// redact keeps a flag.Value's parse error from leaking the secret it was
// given (strconv errors quote their input).
func redact(err error, secret string) error {
	s := strings.TrimRight(secret, "\r\n")
	if s == "" || !strings.Contains(err.Error(), s) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), s, "<redacted>"))
}
