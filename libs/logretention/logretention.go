package logretention

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of Config.
const (
	DefaultMaxAge   = 30 * 24 * time.Hour
	DefaultMaxBytes = 20 << 30
	DefaultEvery    = time.Hour
	DefaultGrace    = 10 * time.Minute
)

// logSuffix names the files a builder writes (nixbuild: <attempt>.log.zst).
const logSuffix = ".log.zst"

// ErrNoProc means the processes' open files cannot be listed, so no log
// can be known not to be in use.
var ErrNoProc = errors.New("cannot tell which logs are open")

// Config says which logs to keep.
type Config struct {
	// Dir is the builder's log directory. Required.
	Dir string
	// MaxAge: logs last modified longer ago are deleted (default
	// DefaultMaxAge).
	MaxAge time.Duration
	// MaxBytes bounds the logs' total size: past it the oldest are deleted
	// (default DefaultMaxBytes).
	MaxBytes int64
	// Every is the time between sweeps (default DefaultEvery).
	Every time.Duration
	// Grace: logs modified this recently are never deleted (default
	// DefaultGrace).
	Grace time.Duration
	// Logger gets a line per sweep that deleted something, and errors.
	Logger zerolog.Logger
	// procDir is /proc; tests point it elsewhere.
	procDir string
}

func (c Config) withDefaults() Config {
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Every <= 0 {
		c.Every = DefaultEvery
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.procDir == "" {
		c.procDir = "/proc"
	}
	return c
}

// Janitor prunes one log directory.
type Janitor struct{ cfg Config }

// New returns a janitor for cfg.Dir.
func New(cfg Config) *Janitor { return &Janitor{cfg: cfg.withDefaults()} }

// Result is what a sweep found and did.
type Result struct {
	Removed, Kept           int
	RemovedBytes, KeptBytes int64
	// Open counts the logs kept because a process holds them open.
	Open int
}

// Run sweeps at once and then every cfg.Every until ctx ends, and returns
// nil then. A failed sweep is logged and tried again at the next.
func (j *Janitor) Run(ctx context.Context) error {
	if j.cfg.Dir == "" {
		return errors.New("log retention: no log directory")
	}
	t := time.NewTicker(j.cfg.Every)
	defer t.Stop()
	for {
		res, err := j.Sweep()
		switch {
		case err != nil:
			j.cfg.Logger.Error().Err(err).Str("dir", j.cfg.Dir).Msg("prune build logs")
		case res.Removed > 0:
			j.cfg.Logger.Info().Str("dir", j.cfg.Dir).Int("removed", res.Removed).Int64("removed_bytes", res.RemovedBytes).
				Int("kept", res.Kept).Int64("kept_bytes", res.KeptBytes).Msg("pruned build logs")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type logFile struct {
	path string
	size int64
	mod  time.Time
}

// Sweep deletes, once, the logs past the maximum age and then the oldest
// while the rest exceed the byte budget, sparing those in use (see the
// package comment).
func (j *Janitor) Sweep() (Result, error) {
	c := j.cfg
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return Result{}, fmt.Errorf("log dir %s: %w", c.Dir, err)
	}
	logs, emptyDirs, err := scan(dir)
	if err != nil {
		return Result{}, err
	}
	open, err := openFiles(c.procDir, dir)
	if err != nil {
		return Result{}, err
	}
	now := time.Now()
	var res Result
	var total int64
	for _, l := range logs {
		total += l.size
	}
	inUse := func(l logFile) bool { return open[l.path] || now.Sub(l.mod) < c.Grace }
	remove := func(l logFile) {
		// Checked again: a log reopened since the scan was truncated, so
		// it changed.
		fi, err := os.Lstat(l.path)
		if err != nil || !fi.ModTime().Equal(l.mod) || fi.Size() != l.size {
			return
		}
		if err := os.Remove(l.path); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.Logger.Warn().Err(err).Str("drv", filepath.Base(filepath.Dir(l.path))).Str("path", l.path).Msg("remove build log")
			}
			return
		}
		res.Removed++
		res.RemovedBytes += l.size
		total -= l.size
	}
	slices.SortFunc(logs, func(a, b logFile) int { return a.mod.Compare(b.mod) })
	kept := logs[:0]
	for _, l := range logs {
		switch {
		case open[l.path]:
			res.Open++
			kept = append(kept, l)
		case inUse(l):
			kept = append(kept, l)
		case now.Sub(l.mod) > c.MaxAge:
			remove(l)
		default:
			kept = append(kept, l)
		}
	}
	// Oldest first while over budget; logs in use stay, even if the
	// budget is not met.
	for _, l := range kept {
		if total <= c.MaxBytes {
			break
		}
		if !inUse(l) {
			remove(l)
		}
	}
	for _, d := range emptyDirs {
		if fi, err := os.Lstat(d); err == nil && now.Sub(fi.ModTime()) >= c.Grace {
			_ = os.Remove(d) // fails, harmlessly, if a log appeared meanwhile
		}
	}
	res.Kept = len(logs) - res.Removed
	res.KeptBytes = total
	return res, nil
}

// scan lists the logs one level below dir, and the directories there that
// are empty.
func scan(dir string) ([]logFile, []string, error) {
	drvs, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil // no build has run yet
	}
	if err != nil {
		return nil, nil, fmt.Errorf("log dir: %w", err)
	}
	var logs []logFile
	var empty []string
	for _, d := range drvs {
		if !d.IsDir() {
			continue
		}
		sub := filepath.Join(dir, d.Name())
		entries, err := os.ReadDir(sub)
		if err != nil {
			continue // removed meanwhile, or unreadable: not ours to judge
		}
		if len(entries) == 0 {
			empty = append(empty, sub)
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), logSuffix) {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			logs = append(logs, logFile{path: filepath.Join(sub, e.Name()), size: fi.Size(), mod: fi.ModTime()})
		}
	}
	return logs, empty, nil
}

// openFiles returns the files under dir that some process holds open, from
// procDir/<pid>/fd. Processes that vanish or that this one may not look
// into are skipped; no readable process at all is an error.
func openFiles(procDir, dir string) (map[string]bool, error) {
	pids, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoProc, err)
	}
	open := map[string]bool{}
	prefix := dir + string(filepath.Separator)
	read := 0
	for _, p := range pids {
		if p.Name() == "" || strings.Trim(p.Name(), "0123456789") != "" {
			continue
		}
		fdDir := filepath.Join(procDir, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		read++
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err == nil && strings.HasPrefix(target, prefix) {
				open[target] = true
			}
		}
	}
	if read == 0 {
		return nil, fmt.Errorf("%w: no process readable in %s", ErrNoProc, procDir)
	}
	return open, nil
}
