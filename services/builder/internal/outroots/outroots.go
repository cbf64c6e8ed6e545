// Package outroots keeps the outputs a builder found valid alive in its
// own Nix store until every jobset that was open while they were built
// (or found valid) has concluded, so that a garbage collection in the
// meantime cannot delete an output a running jobset's later builds need.
//
// Roots are indirect: links in a directory of the builder's own (its
// state dir), each linked from /nix/var/nix/gcroots/auto under the name
// Nix itself gives it (the SHA-1 of the link's path, in Nix's base 32).
// When that directory is writable (a builder running as the store's
// owner, as the all-in-one does) the links are made directly, as Nix's
// addIndirectRoot does, which costs no process; otherwise `nix-store
// --realise --add-root --indirect` makes them (through the daemon).
// Removing a generation removes its links and their auto/ entries. So each
// builder roots in the store it builds in, on whichever machine that is,
// and learns when jobsets conclude from the event log, which every builder
// reads.
//
// Links are grouped in generations, one directory each. A generation
// waits for the jobsets open while it was current (those open when it
// began, and those created since); when one concludes, the current
// generation (if it holds roots) is sealed and a new one begins at the
// next root. A generation whose jobsets have all concluded is removed.
// Each generation's jobsets are kept in a file next to its links, so that
// the next life of the builder, once it has read the log again, removes
// what concluded while it was down.
package outroots

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// jobsetsFile lists, one id a line, the jobsets a generation waits for.
const jobsetsFile = "jobsets"

// rootTimeout bounds one nix-store call that adds roots.
const rootTimeout = 2 * time.Minute

// Roots is one builder's output roots.
type Roots struct {
	dir        string
	nixOptions []string
	log        zerolog.Logger
	// auto is Nix's gcroots/auto directory when this process may write
	// into it (links are then made directly); empty: nix-store makes them.
	auto string

	mu     sync.Mutex
	open   map[string]bool // jobsets created and not concluded, as far as the log was read
	cur    *generation     // nil until the next root
	sealed map[*generation]bool
	ready  chan struct{} // closed once the log was read to its end once
	next   int           // numbers generations made by this life
}

type generation struct {
	dir     string
	waiting map[string]bool
	roots   int // links made (or being made)
	adding  int // Add calls writing into it now
}

// New opens the roots under dir (created if missing), reading the
// generations a previous life left. Nothing is removed until the log was
// read to its end (Follow).
func New(dir string, nixOptions []string, log zerolog.Logger) (*Roots, error) {
	dir, err := filepath.Abs(dir) // Nix names a root by its link's absolute path
	if err != nil {
		return nil, fmt.Errorf("output roots %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output roots %s: %w", dir, err)
	}
	r := &Roots{dir: dir, nixOptions: nixOptions, log: log, open: map[string]bool{},
		sealed: map[*generation]bool{}, ready: make(chan struct{})}
	if auto := autoDir(); syscall.Access(auto, 2 /* W_OK */) == nil {
		r.auto = auto
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("output roots %s: %w", dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		g := &generation{dir: filepath.Join(dir, e.Name()), waiting: map[string]bool{}}
		b, err := os.ReadFile(filepath.Join(g.dir, jobsetsFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("output roots %s: %w", g.dir, err)
		}
		for id := range strings.FieldsSeq(string(b)) {
			g.waiting[id] = true
		}
		g.roots = 1 // whatever it holds, it is sealed and goes once its jobsets concluded
		r.sealed[g] = true
	}
	return r, nil
}

// Ready is closed once the log was read to its end: the open jobsets are
// known, and roots can be added to the right generation.
func (r *Roots) Ready() <-chan struct{} { return r.ready }

// Dir is where the generations are.
func (r *Roots) Dir() string { return r.dir }

// Add roots paths (valid store paths: outputs just judged valid) in the
// current generation. A failure is logged, not returned: the verdict that
// made the paths worth rooting stands either way.
func (r *Roots) Add(ctx context.Context, paths []string) {
	if len(paths) == 0 {
		return
	}
	g, name, err := r.reserve(len(paths))
	if err != nil {
		r.log.Error().Err(err).Int("paths", len(paths)).Msg("outputs not rooted; a garbage collection may delete them before the jobsets that need them conclude")
		return
	}
	defer r.done(g)
	if r.auto != "" {
		err := r.link(g, name, paths)
		if err == nil {
			return
		}
		r.log.Warn().Err(err).Msg("output roots: linking directly failed; asking nix-store")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rootTimeout)
	defer cancel()
	// Several paths make name, name-2, name-3, ... (Nix numbers them).
	args := []string{"--realise", "--add-root", filepath.Join(g.dir, name), "--indirect"}
	for i := 0; i+1 < len(r.nixOptions); i += 2 {
		args = append(args, "--option", r.nixOptions[i], r.nixOptions[i+1])
	}
	args = append(args, "--")
	args = append(args, paths...)
	cmd := exec.CommandContext(ctx, "nix-store", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil {
		r.log.Error().Err(err).Str("stderr", strings.TrimSpace(stderr.String())).Strs("paths", paths).
			Msg("outputs not rooted (nix-store --add-root); a garbage collection may delete them before the jobsets that need them conclude")
	} else if n := bytes.Count(out, []byte("\n")); n != len(paths) {
		r.log.Error().Int("roots", n).Int("paths", len(paths)).Str("dir", g.dir).Msg("nix-store made fewer roots than it was given paths")
	}
}

// autoDir is Nix's directory of indirect roots.
func autoDir() string {
	state := os.Getenv("NIX_STATE_DIR")
	if state == "" {
		state = "/nix/var/nix"
	}
	return filepath.Join(state, "gcroots", "auto")
}

// linkName is the n-th (from 0) link of a call named name, as nix-store
// --add-root numbers them.
func linkName(dir, name string, n int) string {
	if n == 0 {
		return filepath.Join(dir, name)
	}
	return filepath.Join(dir, name+"-"+strconv.Itoa(n+1))
}

// autoName is the entry Nix makes in gcroots/auto for the indirect root
// at link (LocalFSStore::addIndirectRoot).
func (r *Roots) autoName(link string) string {
	sum := sha1.Sum([]byte(link))
	return filepath.Join(r.auto, nixbase32.EncodeToString(sum[:]))
}

// link makes the roots itself: a link to each path in g, and its entry in
// auto/ (written aside and renamed, as Nix does, so a GC never reads half
// of one).
func (r *Roots) link(g *generation, name string, paths []string) error {
	for i, p := range paths {
		l := linkName(g.dir, name, i)
		if err := replaceSymlink(p, l); err != nil {
			return err
		}
		if err := replaceSymlink(l, r.autoName(l)); err != nil {
			return err
		}
	}
	return nil
}

func replaceSymlink(target, link string) error {
	tmp := link + ".tmp-ekaci"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("gc root %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("gc root %s: %w", link, err)
	}
	return nil
}

// reserve returns the current generation (begun now if there is none),
// counted as being written into, and a name for the next links.
func (r *Roots) reserve(n int) (*generation, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		r.next++
		name := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(r.next)
		g := &generation{dir: filepath.Join(r.dir, name), waiting: maps.Clone(r.open)}
		if err := os.Mkdir(g.dir, 0o755); err != nil {
			return nil, "", fmt.Errorf("output roots: %w", err)
		}
		if err := g.save(); err != nil {
			_ = os.RemoveAll(g.dir)
			return nil, "", err
		}
		r.cur = g
	}
	g := r.cur
	g.adding++
	name := "r" + strconv.Itoa(g.roots+1)
	g.roots += n
	return g, name, nil
}

func (r *Roots) done(g *generation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g.adding--
	r.removeDone(g)
}

// Created records a jobset that began (or was restarted): the current
// generation waits for it too.
func (r *Roots) Created(jobset string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open[jobset] {
		return
	}
	r.open[jobset] = true
	if g := r.cur; g != nil {
		g.waiting[jobset] = true
		if err := g.save(); err != nil {
			r.log.Error().Err(err).Msg("output roots: jobsets of the current generation not saved; the next life of the builder may remove its roots early")
		}
	}
}

// Concluded records a jobset that concluded: the current generation is
// sealed, and every generation that waited only for concluded jobsets is
// removed.
func (r *Roots) Concluded(jobset string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.open, jobset)
	if g := r.cur; g != nil {
		delete(g.waiting, jobset)
		if g.roots > 0 {
			r.sealed[g] = true
			r.cur = nil
		}
	}
	for g := range r.sealed {
		delete(g.waiting, jobset)
		r.removeDone(g)
	}
}

// caughtUp is called once the log was read to its end: a generation a
// previous life left that waits for a jobset the log does not hold open
// (concluded long ago, or a log started afresh) waits for nothing.
func (r *Roots) caughtUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for g := range r.sealed {
		for id := range g.waiting {
			if !r.open[id] {
				delete(g.waiting, id)
			}
		}
		r.removeDone(g)
	}
	close(r.ready)
}

// removeDone removes a sealed generation that waits for nothing and that
// nobody writes into. Called with r.mu held.
func (r *Roots) removeDone(g *generation) {
	if !r.sealed[g] || len(g.waiting) > 0 || g.adding > 0 {
		return
	}
	if r.auto != "" {
		// Their entries in auto/ first (a GC would drop them once the
		// links are gone, but nobody may run one for a long time).
		ents, _ := os.ReadDir(g.dir)
		for _, e := range ents {
			l := filepath.Join(g.dir, e.Name())
			a := r.autoName(l)
			if t, err := os.Readlink(a); err == nil && t == l {
				_ = os.Remove(a)
			}
		}
	}
	if err := os.RemoveAll(g.dir); err != nil {
		r.log.Error().Err(err).Str("dir", g.dir).Msg("output roots of concluded jobsets not removed")
		return
	}
	delete(r.sealed, g)
	r.log.Debug().Str("dir", g.dir).Msg("output roots of concluded jobsets removed")
}

// save writes the generation's jobsets (atomically). Called with r.mu held.
func (g *generation) save() error {
	ids := slices.Sorted(maps.Keys(g.waiting))
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	for _, id := range ids {
		_, _ = w.WriteString(id + "\n")
	}
	_ = w.Flush()
	tmp := filepath.Join(g.dir, jobsetsFile+".tmp")
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("output roots: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(g.dir, jobsetsFile)); err != nil {
		return fmt.Errorf("output roots: %w", err)
	}
	return nil
}

// reader is what Follow needs of the event log.
type reader interface {
	Read(ctx context.Context, from uint64, filters []string, fn func(eventlog.Record) error) error
}

// Follow reads every jobset's creation, restart (a concluded jobset open
// again) and conclusion from the log, to its end (then Ready is closed)
// and then every poll as new ones come, until ctx ends. A read that fails
// is retried at the next poll.
func (r *Roots) Follow(ctx context.Context, log reader, poll time.Duration) error {
	filters := []string{eventlog.FactFilter(eventlog.Jobset, "created"), eventlog.FactFilter(eventlog.Jobset, "restarted"),
		eventlog.FactFilter(eventlog.Jobset, "concluded")}
	var from uint64
	first := true
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := log.Read(ctx, from, filters, func(rec eventlog.Record) error {
			switch rec.Fact {
			case "created", "restarted":
				r.Created(rec.ID)
			case "concluded":
				r.Concluded(rec.ID)
			}
			from = rec.Seq
			return nil
		})
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			r.log.Warn().Err(err).Msg("output roots: jobsets not read from the log; trying again")
		case first:
			first = false
			r.caughtUp()
		}
		t.Reset(poll)
	}
}
