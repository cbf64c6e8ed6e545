package closure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// reader reads .drv files one at a time, reusing its buffer for each.
type reader struct {
	buf []byte
	br  bytes.Reader
}

// read reads and parses the .drv file at path. Nothing in the Drv refers
// to r's buffer: go-nix parses a copy.
func (r *reader) read(path string) (Drv, error) {
	if r.buf == nil {
		r.buf = make([]byte, 16<<10)
	}
	data, err := readFile(path, r.buf)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Drv{}, fmt.Errorf("derivation %s does not exist in the store", path)
		}
		return Drv{}, fmt.Errorf("derivation %s: %w", path, err)
	}
	if cap(data) > cap(r.buf) {
		r.buf = data[:cap(data)]
	}
	r.br.Reset(data)
	return parse(path, &r.br)
}

// parse makes a Drv of the .drv file at path, whose contents data reads.
func parse(path string, data io.Reader) (Drv, error) {
	pd, err := derivation.ReadDerivation(data)
	if err != nil {
		return Drv{}, fmt.Errorf("derivation %s: not a valid .drv file: %w", path, err)
	}
	id, err := drvID(path)
	if err != nil {
		return Drv{}, err
	}
	d := Drv{Path: path, ID: id, System: pd.Platform, Name: pd.Name()}
	if d.Name == "" {
		d.Name = nameFromPath(path)
	}
	d.Outputs = make(map[string]string, len(pd.Outputs))
	for n, o := range pd.Outputs {
		d.Outputs[n] = o.Path
	}
	if o := pd.Outputs["out"]; len(pd.Outputs) == 1 && o != nil && o.HashAlgorithm != "" {
		d.FixedOutput = true
	}
	if len(pd.InputDerivations) > 0 {
		d.InputDrvs = make([]string, 0, len(pd.InputDerivations))
		for in := range pd.InputDerivations {
			d.InputDrvs = append(d.InputDrvs, in)
		}
		slices.Sort(d.InputDrvs)
	}
	prefer, features := pd.Env["preferLocalBuild"], pd.Env["requiredSystemFeatures"]
	d.PreferLocalBuild = prefer == "1"
	d.RequiredSystemFeatures = strings.Fields(features)
	// Structured attributes carry both in __json with their real types.
	if js, ok := pd.Env["__json"]; ok {
		var s struct {
			PreferLocalBuild       bool     `json:"preferLocalBuild"`
			RequiredSystemFeatures []string `json:"requiredSystemFeatures"`
		}
		if err := json.Unmarshal([]byte(js), &s); err == nil {
			d.PreferLocalBuild = d.PreferLocalBuild || s.PreferLocalBuild
			if len(s.RequiredSystemFeatures) > 0 {
				d.RequiredSystemFeatures = s.RequiredSystemFeatures
			}
		}
	}
	return d, nil
}

// drvID is eventlog.DrvID(path), with a shorter path (no path.Base, no
// general token check) when path is /<dir>/<32 letters, digits or
// _>-<name>.drv, as a store path is: about 60 ns against 80-120 ns a call
// (go test -bench, 2 shared cores), a few milliseconds in a 100,000
// derivation closure.
func drvID(path string) (string, error) {
	base := path[strings.LastIndexByte(path, '/')+1:]
	if len(base) < 33 || base[32] != '-' || !strings.HasSuffix(base, ".drv") {
		return eventlog.DrvID(path)
	}
	for i := range 32 {
		if c := base[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return eventlog.DrvID(path)
		}
	}
	return base[:32], nil
}

// nameFromPath is the name part of /nix/store/<hash>-<name>.drv.
func nameFromPath(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), ".drv")
	if _, name, ok := strings.Cut(base, "-"); ok {
		return name
	}
	return base
}
