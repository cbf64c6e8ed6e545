// Package cache serves a Nix binary cache over HTTP from one directory:
// builders substitute from it (GET, HEAD) and the evaluator and builders
// fill it with `nix copy --to http://...` (PUT). It is how a builder with a
// store of its own gets the .drv closure the evaluator wrote and the
// outputs other builders built, without sharing a Nix store.
//
// What it promises:
//   - a file is visible only once whole: an upload is written to a
//     temporary file, fsynced, then renamed into place, so a reader never
//     sees half a NAR and a crash leaves at most a temporary file, removed
//     at the next start;
//   - only the names of Nix's binary cache layout are served or written
//     (<hash>.narinfo, nar/<hash>.nar[.xz|.zst|.bz2], <hash>.ls, log/<drv>,
//     nix-cache-info): never a path outside the directory;
//   - bounded: one upload is at most MaxObjectBytes, and the directory at
//     most MaxBytes, evicting the least recently written paths (narinfo
//     first, then its NAR, so a path is never advertised without its NAR).
package cache

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Info is the nix-cache-info this cache answers: the store it holds paths
// of, and a priority that ranks it before the public cache (40) when both
// are substituters.
const Info = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"

// names are the files of Nix's binary cache layout this cache keeps.
var names = regexp.MustCompile(`^(?:[0-9a-z]{32}\.narinfo|[0-9a-z]{32}\.ls|nar/[0-9a-z]{32,64}\.nar(?:\.xz|\.zst|\.bz2)?|log/[0-9a-z]{32}-[0-9A-Za-z+._?=-]{1,211}\.drv)$`)

// Config is what a Cache needs.
type Config struct {
	Dir            string // where the cache's files live
	MaxObjectBytes int64  // the largest single upload
	MaxBytes       int64  // the whole directory's budget
	Logger         zerolog.Logger
}

// Cache is the HTTP handler of one cache directory.
type Cache struct {
	cfg Config

	mu    sync.Mutex // guards total: uploads and eviction
	total int64
}

// New opens the cache in cfg.Dir (creating it), removes temporary files a
// crash left, and counts what it holds.
func New(cfg Config) (*Cache, error) {
	if cfg.MaxObjectBytes <= 0 || cfg.MaxBytes <= 0 {
		return nil, fmt.Errorf("cache budgets %d/%d bytes: want both above 0", cfg.MaxObjectBytes, cfg.MaxBytes)
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "nar"), filepath.Join(cfg.Dir, "log"), filepath.Join(cfg.Dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cache dir: %w", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(cfg.Dir, "tmp")); err != nil {
		return nil, fmt.Errorf("remove unfinished uploads: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	c := &Cache{cfg: cfg}
	files, err := c.files()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		c.total += f.size
	}
	return c, nil
}

// ServeHTTP answers GET and HEAD of cached files and PUT of new ones.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name == "nix-cache-info" {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			w.Header().Set("Content-Type", "text/x-nix-cache-info")
			_, _ = io.WriteString(w, Info)
		case http.MethodPut: // Nix writes one when it finds none; ours is fixed
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 4096))
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
		return
	}
	if !names.MatchString(name) {
		http.Error(w, fmt.Sprintf("%q is not a file of a Nix binary cache", name), http.StatusNotFound)
		return
	}
	path := filepath.Join(c.cfg.Dir, filepath.FromSlash(name))
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if strings.HasSuffix(name, ".narinfo") {
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
		}
		http.ServeFile(w, r, path)
	case http.MethodPut:
		n, err := c.put(path, http.MaxBytesReader(w, r.Body, c.cfg.MaxObjectBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, fmt.Sprintf("%s is larger than %d bytes", name, c.cfg.MaxObjectBytes), http.StatusRequestEntityTooLarge)
				return
			}
			c.cfg.Logger.Error().Err(err).Str("file", name).Msg("upload not kept")
			http.Error(w, "upload not kept", http.StatusInternalServerError)
			return
		}
		c.cfg.Logger.Debug().Str("file", name).Int64("bytes", n).Msg("uploaded")
		w.WriteHeader(http.StatusCreated)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// put writes body to path whole or not at all, then evicts what exceeds
// the budget.
func (c *Cache) put(path string, body io.Reader) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Join(c.cfg.Dir, "tmp"), "upload-*")
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	n, err := io.Copy(tmp, body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("upload %s: %w", filepath.Base(path), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old int64
	if st, err := os.Stat(path); err == nil {
		old = st.Size()
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, fmt.Errorf("upload %s: %w", filepath.Base(path), err)
	}
	c.total += n - old
	if c.total > c.cfg.MaxBytes {
		if err := c.evict(); err != nil {
			return n, err
		}
	}
	return n, nil
}

type file struct {
	name    string // slash-separated, relative to the cache dir
	size    int64
	modTime time.Time
}

func (c *Cache) files() ([]file, error) {
	var fs []file
	for _, sub := range []string{"", "nar", "log"} {
		ents, err := os.ReadDir(filepath.Join(c.cfg.Dir, sub))
		if err != nil {
			return nil, fmt.Errorf("list cache: %w", err)
		}
		for _, e := range ents {
			name := e.Name()
			if sub != "" {
				name = sub + "/" + name
			}
			if e.IsDir() || !names.MatchString(name) {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			fs = append(fs, file{name: name, size: info.Size(), modTime: info.ModTime()})
		}
	}
	return fs, nil
}

// evict removes the oldest paths until the cache is at most 90 % of its
// budget (so that not every upload evicts). A path goes narinfo first, so
// that no narinfo ever names a NAR that is gone; a NAR no narinfo names
// (its narinfo evicted, or never written) goes by age alone. Called with
// c.mu held.
func (c *Cache) evict() error {
	files, err := c.files()
	if err != nil {
		return err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].modTime.Before(files[j].modTime) })
	target := c.cfg.MaxBytes / 10 * 9
	for _, f := range files {
		if c.total <= target {
			break
		}
		if strings.HasPrefix(f.name, "nar/") {
			continue // goes with its narinfo below, or last
		}
		if strings.HasSuffix(f.name, ".narinfo") {
			nar := narOf(filepath.Join(c.cfg.Dir, f.name))
			c.remove(f)
			if nar != "" {
				c.removeName(nar)
			}
			continue
		}
		c.remove(f)
	}
	for _, f := range files {
		if c.total <= target {
			break
		}
		if strings.HasPrefix(f.name, "nar/") {
			c.remove(f)
		}
	}
	c.cfg.Logger.Info().Int64("bytes", c.total).Int64("max_bytes", c.cfg.MaxBytes).Msg("evicted the oldest paths")
	return nil
}

func (c *Cache) remove(f file) { c.removeName(f.name) }

func (c *Cache) removeName(name string) {
	p := filepath.Join(c.cfg.Dir, filepath.FromSlash(name))
	st, err := os.Stat(p)
	if err != nil || os.Remove(p) != nil {
		return
	}
	c.total -= st.Size()
}

// narOf reads the URL: line of a narinfo.
func narOf(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for s.Scan() {
		if u, ok := strings.CutPrefix(s.Text(), "URL: "); ok && names.MatchString(u) && strings.HasPrefix(u, "nar/") {
			return u
		}
	}
	return ""
}
