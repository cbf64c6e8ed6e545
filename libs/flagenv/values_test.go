package flagenv

import (
	"flag"
	"slices"
	"testing"
)

func TestListAndPairs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantList  []string
		wantPairs []string
		wantErr   bool
	}{
		{name: "flags", args: []string{"-systems", "x86_64-linux, aarch64-linux,,", "-nix-option", "substituters=", "-nix-option", "cores=2"},
			wantList: []string{"x86_64-linux", "aarch64-linux"}, wantPairs: []string{"substituters", "", "cores", "2"}},
		{name: "env", env: map[string]string{"T_SYSTEMS": "a,b", "T_NIX_OPTION": "substituters=;max-silent-time=10"},
			wantList: []string{"a", "b"}, wantPairs: []string{"substituters", "", "max-silent-time", "10"}},
		{name: "value with equals", args: []string{"-nix-option", "extra-sandbox-paths=/a=/b"},
			wantPairs: []string{"extra-sandbox-paths", "/a=/b"}},
		{name: "no equals", args: []string{"-nix-option", "substituters"}, wantErr: true},
		{name: "empty name", env: map[string]string{"T_NIX_OPTION": "=x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(discard{})
			var l List
			var p Pairs
			fs.Var(&l, "systems", "")
			fs.Var(&p, "nix-option", "")
			err := Parse(fs, tt.args, "T")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if !slices.Equal(l, tt.wantList) {
				t.Errorf("list = %q, want %q", l, tt.wantList)
			}
			if !slices.Equal(p, tt.wantPairs) {
				t.Errorf("pairs = %q, want %q", p, tt.wantPairs)
			}
		})
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
