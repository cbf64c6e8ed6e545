package flagenv

import (
	"flag"
	"fmt"
	"reflect"
	"strings"
)

// Usage returns a usage function for fs, as Parse installs: a "Usage of
// name:" line, then PrintDefaults.
func Usage(fs *flag.FlagSet, prefix string) func() {
	return func() {
		if fs.Name() == "" {
			fmt.Fprintln(fs.Output(), "Usage:")
		} else {
			fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
		}
		PrintDefaults(fs, prefix)
	}
}

// PrintDefaults writes fs's flags to fs.Output() in flag.PrintDefaults'
// layout, each followed by the variable(s) that may set it:
//
//	-nats-url string
//	    	NATS server URL (default "nats://127.0.0.1:4222")
//	    	env EKACI_NATS_URL
//	-github-token string
//	    	GitHub API token
//	    	env EKACI_GITHUB_TOKEN or EKACI_GITHUB_TOKEN_FILE
func PrintDefaults(fs *flag.FlagSet, prefix string) {
	fs.VisitAll(func(f *flag.Flag) {
		var b strings.Builder
		fmt.Fprintf(&b, "  -%s", f.Name)
		typ, usage := flag.UnquoteUsage(&flag.Flag{Name: f.Name, Usage: f.Usage, Value: unwrap(f.Value), DefValue: f.DefValue})
		if typ != "" {
			b.WriteString(" " + typ)
		}
		// As flag.PrintDefaults: a one-letter boolean flag fits on the
		// name's line; anything else goes on the next.
		if b.Len() <= 4 {
			b.WriteString("\t")
		} else {
			b.WriteString("\n    \t")
		}
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		if !isZeroValue(f) {
			if isString(f) {
				fmt.Fprintf(&b, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(&b, " (default %v)", f.DefValue)
			}
		}
		env := EnvName(prefix, f.Name)
		if isSecret(f) {
			fmt.Fprintf(&b, "\n    \tenv %s or %s_FILE", env, env)
		} else {
			fmt.Fprintf(&b, "\n    \tenv %s", env)
		}
		fmt.Fprintln(fs.Output(), b.String())
	})
}

// isZeroValue reports whether f's default is its type's zero value, which
// flag.PrintDefaults leaves out; the same reflection as the standard
// library's unexported helper.
func isZeroValue(f *flag.Flag) (zero bool) {
	typ := reflect.TypeOf(unwrap(f.Value))
	var z reflect.Value
	if typ.Kind() == reflect.Pointer {
		z = reflect.New(typ.Elem())
	} else {
		z = reflect.Zero(typ)
	}
	// A Value whose String panics on its zero value still has a default
	// worth printing.
	defer func() {
		if recover() != nil {
			zero = false
		}
	}()
	v, ok := z.Interface().(flag.Value)
	return ok && f.DefValue == v.String()
}

func isString(f *flag.Flag) bool {
	g, ok := unwrap(f.Value).(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(string)
	return ok
}
