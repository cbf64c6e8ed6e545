// Package ciconfig reads a checkout's .ekaci/config.json strictly: every
// key is known, every value has the expected type, every path stays inside
// the checkout. A refusal names the key path that is wrong and what was
// expected there, so a pull request author can fix it without reading our
// code.
//
// Checks (a "checks" key) are commands run in a sandbox by the checker;
// their packages are attributes of one of the configuration's jobs, so
// that nothing the pull request wrote is evaluated outside the evaluator.
package ciconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/ekaci/ekaci/libs/eventlog/text"
)

// FileName is where the configuration lives, relative to the checkout.
const FileName = ".ekaci/config.json"

// MaxSize bounds the configuration file.
const MaxSize = 1 << 20

// ErrNotConfigured means the checkout has no configuration file: no CI is
// configured, which is not an error in the repository.
var ErrNotConfigured = errors.New(FileName + " not found")

// Error is a refused configuration.
type Error struct {
	Path string // key path, e.g. "jobs.app.file"; empty for the document
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return FileName + ": " + e.Msg
	}
	return FileName + ": " + e.Path + ": " + e.Msg
}

// Config is a read configuration; jobs and checks are sorted by name.
type Config struct {
	Jobs   []Job
	Checks []Check
}

// Check is one sandboxed command.
type Check struct {
	Name    string
	Command string
	// AllowNetwork gives the check a network (never the host's loopback).
	AllowNetwork bool
	// TimeoutSeconds is its time limit (DefaultCheckTimeout when not
	// set); the checker bounds it by its own maximum.
	TimeoutSeconds uint32
	// PackagesJob and PackagesAttrs name the attributes of a job whose
	// outputs go on the check's PATH; empty for none.
	PackagesJob   string
	PackagesAttrs []string
}

// DefaultCheckTimeout is a check's time limit when its configuration does
// not say (seconds).
const DefaultCheckTimeout = 600

// MaxCommand bounds a check's command, in bytes.
const MaxCommand = 4096

// Job is one Nix file to evaluate and build.
type Job struct {
	Name              string
	File              string // repo-relative, cleaned
	Attr              string
	AllowEvalFailures bool
	Args              map[string]string
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Read reads dir/.ekaci/config.json.
func Read(dir string) (*Config, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("checkout %s: %w", dir, err)
	}
	path := filepath.Join(root, FileName)
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		// A dangling .ekaci or a missing file both mean "not configured".
		return nil, ErrNotConfigured
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := inside(root, FileName); err != nil {
		return nil, &Error{Msg: err.Error()}
	}
	if st.Mode()&os.ModeSymlink == 0 && !st.Mode().IsRegular() {
		return nil, &Error{Msg: "is not a regular file"}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, &Error{Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	return Parse(root, data)
}

// Parse checks a configuration document; root is the checkout the paths
// in it must stay inside.
func Parse(root string, data []byte) (*Config, error) {
	doc, err := object(data, "")
	if err != nil {
		return nil, err
	}
	if err := onlyKeys(doc, "", "jobs", "checks"); err != nil {
		return nil, err
	}
	cfg := &Config{}
	jobsRaw, ok := doc["jobs"]
	if _, checks := doc["checks"]; !ok && !checks {
		return nil, &Error{Msg: `has no "jobs": want at least one, e.g. {"jobs": {"main": {"file": "default.nix"}}}`}
	}
	if !ok {
		// Checks alone: a repository with linters and no Nix jobs.
		jobsRaw = json.RawMessage(`{"": {}}`)
	}
	jobs, err := object(jobsRaw, "jobs")
	if err != nil {
		return nil, err
	}
	if len(jobs) == 0 {
		return nil, &Error{Path: "jobs", Msg: "is empty: want at least one job"}
	}
	for name, raw := range jobs {
		if !ok {
			break
		}
		job, err := parseJob(root, name, raw)
		if err != nil {
			return nil, err
		}
		cfg.Jobs = append(cfg.Jobs, job)
	}
	sort.Slice(cfg.Jobs, func(i, j int) bool { return cfg.Jobs[i].Name < cfg.Jobs[j].Name })
	if raw, ok := doc["checks"]; ok {
		checks, err := object(raw, "checks")
		if err != nil {
			return nil, err
		}
		for name, raw := range checks {
			check, err := parseCheck(cfg, name, raw)
			if err != nil {
				return nil, err
			}
			cfg.Checks = append(cfg.Checks, check)
		}
		sort.Slice(cfg.Checks, func(i, j int) bool { return cfg.Checks[i].Name < cfg.Checks[j].Name })
	}
	return cfg, nil
}

func parseCheck(cfg *Config, name string, raw json.RawMessage) (Check, error) {
	at := "checks." + name
	if err := checkName("checks", name); err != nil {
		return Check{}, err
	}
	m, err := object(raw, at)
	if err != nil {
		return Check{}, err
	}
	if err := onlyKeys(m, at, "command", "allow_network", "timeout_seconds", "packages"); err != nil {
		return Check{}, err
	}
	check := Check{Name: name, TimeoutSeconds: DefaultCheckTimeout}
	cmdRaw, ok := m["command"]
	if !ok {
		return Check{}, &Error{Path: at + ".command", Msg: `missing: want the command to run in the checkout, e.g. "./lint.sh"`}
	}
	if err := decode(cmdRaw, at+".command", "a string", &check.Command); err != nil {
		return Check{}, err
	}
	switch {
	case strings.TrimSpace(check.Command) == "":
		return Check{}, &Error{Path: at + ".command", Msg: "is empty: want the command to run in the checkout"}
	case len(check.Command) > MaxCommand:
		return Check{}, &Error{Path: at + ".command", Msg: fmt.Sprintf("is %d bytes: want at most %d (put a long command in a script)", len(check.Command), MaxCommand)}
	case strings.ContainsRune(check.Command, 0):
		return Check{}, &Error{Path: at + ".command", Msg: "contains a NUL byte"}
	}
	if raw, ok := m["allow_network"]; ok {
		if err := decode(raw, at+".allow_network", "true or false", &check.AllowNetwork); err != nil {
			return Check{}, err
		}
	}
	if raw, ok := m["timeout_seconds"]; ok {
		var n float64
		if err := decode(raw, at+".timeout_seconds", "a number of seconds", &n); err != nil {
			return Check{}, err
		}
		if n < 1 || n > 7*24*3600 || n != float64(uint32(n)) {
			return Check{}, &Error{Path: at + ".timeout_seconds", Msg: "want a whole number of seconds from 1 to 604800"}
		}
		check.TimeoutSeconds = uint32(n)
	}
	if raw, ok := m["packages"]; ok {
		pat := at + ".packages"
		pm, err := object(raw, pat)
		if err != nil {
			return Check{}, err
		}
		if err := onlyKeys(pm, pat, "job", "attrs"); err != nil {
			return Check{}, err
		}
		jobRaw, ok := pm["job"]
		if !ok {
			return Check{}, &Error{Path: pat + ".job", Msg: "missing: want the name of the job whose attributes the check needs"}
		}
		if err := decode(jobRaw, pat+".job", "a string", &check.PackagesJob); err != nil {
			return Check{}, err
		}
		found := false
		for _, j := range cfg.Jobs {
			found = found || j.Name == check.PackagesJob
		}
		if !found {
			return Check{}, &Error{Path: pat + ".job", Msg: fmt.Sprintf("%s is not a job of this configuration", text.Bound(strconvQuote(check.PackagesJob), maxShown))}
		}
		attrsRaw, ok := pm["attrs"]
		if !ok {
			return Check{}, &Error{Path: pat + ".attrs", Msg: `missing: want the job's attributes to put on PATH, e.g. ["shellcheck"]`}
		}
		if err := decode(attrsRaw, pat+".attrs", "an array of strings", &check.PackagesAttrs); err != nil {
			return Check{}, err
		}
		if len(check.PackagesAttrs) == 0 || len(check.PackagesAttrs) > 64 {
			return Check{}, &Error{Path: pat + ".attrs", Msg: "want 1 to 64 attribute paths"}
		}
		for i, a := range check.PackagesAttrs {
			if a == "" || len(a) > 256 {
				return Check{}, &Error{Path: fmt.Sprintf("%s.attrs[%d]", pat, i), Msg: "want an attribute path of 1 to 256 bytes"}
			}
		}
	}
	return check, nil
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

func checkName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return &Error{Path: kind + "." + name, Msg: "bad name: want letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 characters"}
	}
	return nil
}

func parseJob(root, name string, raw json.RawMessage) (Job, error) {
	at := "jobs." + name
	if err := checkName("jobs", name); err != nil {
		return Job{}, err
	}
	m, err := object(raw, at)
	if err != nil {
		return Job{}, err
	}
	if err := onlyKeys(m, at, "file", "attr", "allow_eval_failures", "args"); err != nil {
		return Job{}, err
	}
	job := Job{Name: name, AllowEvalFailures: true}
	fileRaw, ok := m["file"]
	if !ok {
		return Job{}, &Error{Path: at + ".file", Msg: "missing: want the repository-relative path of a .nix file"}
	}
	if err := decode(fileRaw, at+".file", "a string", &job.File); err != nil {
		return Job{}, err
	}
	clean, err := repoPath(root, job.File)
	if err != nil {
		return Job{}, &Error{Path: at + ".file", Msg: err.Error()}
	}
	job.File = clean
	if raw, ok := m["attr"]; ok {
		if err := decode(raw, at+".attr", "a string", &job.Attr); err != nil {
			return Job{}, err
		}
	}
	if raw, ok := m["allow_eval_failures"]; ok {
		if err := decode(raw, at+".allow_eval_failures", "true or false", &job.AllowEvalFailures); err != nil {
			return Job{}, err
		}
	}
	if raw, ok := m["args"]; ok {
		args, err := object(raw, at+".args")
		if err != nil {
			return Job{}, err
		}
		job.Args = map[string]string{}
		for k, v := range args {
			var s string
			if err := decode(v, at+".args."+k, "a string", &s); err != nil {
				return Job{}, err
			}
			job.Args[k] = s
		}
	}
	return job, nil
}

// repoPath checks that p names a regular file inside root, also after
// following symlinks, and returns it cleaned.
func repoPath(root, p string) (string, error) {
	if p == "" {
		return "", errors.New("is empty: want the repository-relative path of a .nix file")
	}
	if filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is absolute: want a path relative to the repository root", p)
	}
	clean := filepath.Clean(p)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%q leaves the repository", p)
	}
	if err := inside(root, clean); err != nil {
		return "", err
	}
	st, err := os.Stat(filepath.Join(root, clean))
	if err != nil {
		return "", fmt.Errorf("%q does not exist in the repository", p)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%q is not a regular file", p)
	}
	return clean, nil
}

// inside refuses rel when, symlinks followed, it resolves outside root.
func inside(root, rel string) error {
	real, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%q does not exist in the repository", rel)
		}
		return fmt.Errorf("%q: %v", rel, err)
	}
	r, err := filepath.Rel(root, real)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return fmt.Errorf("%q is a symlink that leaves the repository (to %s)", rel, real)
	}
	return nil
}

// object decodes an object, refusing duplicate keys and reporting syntax
// errors with line and column.
func object(data []byte, at string) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if at == "" {
			if err := syntax(data); err != nil {
				return nil, err
			}
		}
		return nil, &Error{Path: at, Msg: "want an object, found " + kindOf(trimmed)}
	}
	if at == "" {
		if err := syntax(data); err != nil {
			return nil, err
		}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, &Error{Path: at, Msg: text.Bound(err.Error(), maxMsg)}
	}
	if dup := duplicateKey(data); dup != "" {
		return nil, &Error{Path: join(at, dup), Msg: "appears twice"}
	}
	return m, nil
}

func syntax(data []byte) error {
	var v any
	err := json.Unmarshal(data, &v)
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return nil // a number too big for a float64 is still JSON; its key says what it should be
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(data, se.Offset)
		return &Error{Msg: fmt.Sprintf("not valid JSON at line %d, column %d: %v", line, col, se)}
	}
	if err != nil {
		return &Error{Msg: "not valid JSON: " + text.Bound(err.Error(), maxMsg)}
	}
	return nil
}

func position(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off-1 && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// duplicateKey returns a key that appears twice at the top of the object.
func duplicateKey(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

func onlyKeys(m map[string]json.RawMessage, at string, allowed ...string) error {
	var unknown []string
	for k := range m {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return &Error{Path: join(at, unknown[0]), Msg: fmt.Sprintf("unknown key: want one of %s", strings.Join(allowed, ", "))}
}

func decode(raw json.RawMessage, at, want string, into any) error {
	if err := json.Unmarshal(raw, into); err != nil {
		return &Error{Path: at, Msg: fmt.Sprintf("want %s, found %s", want, kindOf(bytes.TrimSpace(raw)))}
	}
	return nil
}

// kindOf says what a JSON value is, for a refusal. The value's own bytes
// come from the pull request: they are shown made valid UTF-8 and cut short.
func kindOf(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string " + text.Bound(string(v), maxShown)
	case 't', 'f':
		return text.Bound(string(v), maxShown)
	case 'n':
		return "null"
	}
	return "the number " + text.Bound(string(v), maxShown)
}

// maxShown bounds the bytes of a refused value shown in a refusal, maxMsg
// a message of encoding/json's (which may quote the document).
const (
	maxShown = 80
	maxMsg   = 400
)

func join(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}
