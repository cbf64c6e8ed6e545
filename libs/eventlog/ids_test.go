package eventlog_test

import (
	"strings"
	"testing"

	"github.com/ekaci/ekaci/libs/eventlog"
)

func TestDrvID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-1.0.drv", "0123456789abcdfghijklmnpqrsvwxyz", true},
		{"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello", "", false},
		{"/nix/store/short-hello.drv", "", false},
		{"hello.drv", "", false},
	}
	for _, tt := range tests {
		got, err := eventlog.DrvID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("DrvID(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestIDsAreTokens(t *testing.T) {
	c := eventlog.ChangeID("https://github.com/o/r.git", "abc", "")
	if !eventlog.ValidToken(c) || !eventlog.ValidToken(eventlog.JobsetID(c, "a.b*c")) {
		t.Fatalf("ids are not subject tokens: %s", c)
	}
	if c == eventlog.ChangeID("https://github.com/o/r.git", "abc", "def") {
		t.Fatal("base commit does not change the change id")
	}
	for _, s := range []string{"x86_64-linux", "weird.system*"} {
		if !eventlog.ValidToken(eventlog.SystemToken(s)) {
			t.Errorf("SystemToken(%q) = %q is not a token", s, eventlog.SystemToken(s))
		}
	}
}

// TestContributorAndBuilderIDs: a login is its own id without case; a
// builder its name; anything that is no subject token gets a digest that
// no login or plain name can be.
func TestContributorAndBuilderIDs(t *testing.T) {
	for _, row := range []struct{ name, got, want string }{
		{"login", eventlog.ContributorID("Octo-Cat"), "octo-cat"},
		{"builder", eventlog.BuilderID("local"), "local"},
	} {
		if row.got != row.want {
			t.Errorf("%s: got %q, want %q", row.name, row.got, row.want)
		}
	}
	for _, id := range []string{eventlog.ContributorID("a.b"), eventlog.BuilderID("host.example.org"), eventlog.BuilderID("_x")} {
		if !eventlog.ValidToken(id) || id[0] != '_' {
			t.Errorf("id %q: want a token starting with _", id)
		}
	}
}

func TestValidToken(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"abc_DEF-019", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"a.b", false}, {"a*", false}, {"a>", false}, {"a b", false}, {"é", false}, {"a/b", false},
	} {
		if got := eventlog.ValidToken(tc.s); got != tc.ok {
			t.Errorf("ValidToken(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}
