package flagenv

import (
	"fmt"
	"strings"
)

// List is a comma-separated flag value: "a, b,,c" holds [a b c].
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set replaces the list (a later flag wins, as for any other value).
func (l *List) Set(v string) error {
	*l = nil
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// Pairs collects repeated name=value flags as a flat name, value, name,
// value list. Its environment variable carries several separated by ';'.
type Pairs []string

func (p *Pairs) String() string {
	var parts []string
	for i := 0; i+1 < len(*p); i += 2 {
		parts = append(parts, (*p)[i]+"="+(*p)[i+1])
	}
	return strings.Join(parts, ";")
}

// Set appends every name=value in v.
func (p *Pairs) Set(v string) error {
	for _, kv := range strings.Split(v, ";") {
		if kv == "" {
			continue
		}
		name, value, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("want name=value, got %q", kv)
		}
		*p = append(*p, strings.TrimSpace(name), value)
	}
	return nil
}
