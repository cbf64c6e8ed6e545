package flagenv

import (
	"flag"
	"fmt"
)

// Secret marks the flag name of fs as a secret: besides the command line
// and EKACI_<NAME>, it may come from the file named by EKACI_<NAME>_FILE,
// and errors never show its value. Call it after defining the flag and
// before Parse; it panics if fs has no such flag, like a flag defined
// twice, since that is a mistake in the program.
func Secret(fs *flag.FlagSet, name string) {
	f := fs.Lookup(name)
	if f == nil {
		panic(fmt.Sprintf("flagenv: Secret(%q): no such flag", name))
	}
	if isSecret(f) {
		return
	}
	f.Value = &secretValue{f.Value}
}

// secretValue wraps a secret flag's Value so Parse and Usage can tell it is
// one; it is a pointer so the zero value that flag's usage code builds by
// reflection is safe to call.
type secretValue struct{ flag.Value }

func (s *secretValue) String() string {
	if s == nil || s.Value == nil {
		return ""
	}
	return s.Value.String()
}

func (s *secretValue) Get() any {
	if g, ok := s.Value.(flag.Getter); ok {
		return g.Get()
	}
	return s.Value.String()
}

// IsBoolFlag keeps a secret bool flag usable as "-name" without a value.
func (s *secretValue) IsBoolFlag() bool {
	b, ok := s.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func isSecret(f *flag.Flag) bool {
	_, ok := f.Value.(*secretValue)
	return ok
}

// unwrap is the Value a flag was defined with.
func unwrap(v flag.Value) flag.Value {
	if s, ok := v.(*secretValue); ok {
		return s.Value
	}
	return v
}
