package checkname_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ekaci/ekaci/libs/githubapp/checkname"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("é", 300)
	for _, tt := range []struct{ name, got, want string }{
		{"configure", checkname.Configure, "ekaci: configure"},
		{"job", checkname.Job("packages"), "ekaci: packages"},
		{"attr", checkname.Attr("hello.x86_64", "packages"), "hello.x86_64 (packages)"},
		{"check", checkname.Check("lint"), "ekaci: check lint"},
		{"approval", checkname.Approval, "ekaci: approval required"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if n := checkname.Attr(long, "j"); len(n) > 255 || !utf8.ValidString(n) || !strings.HasSuffix(n, "…") {
		t.Errorf("Attr(300 runes) = %d bytes, valid %v: want ≤ 255 valid bytes ending in …", len(n), utf8.ValidString(n))
	}
}
