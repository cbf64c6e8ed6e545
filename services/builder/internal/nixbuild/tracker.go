package nixbuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tracker keeps one file per running nix-store under its directory, naming
// the nix-store process and the builder process groups below it (each by
// pid and start time, so a reused pid is never mistaken for it). Nix puts
// every builder in a session of its own, so a builder outlives a nix-store
// that is killed; Pdeathsig stops nix-store when we die, but not a
// nix-store that was itself SIGKILLed with us. The next life of the
// process calls Sweep before it builds again and ends whatever is left.
type Tracker struct {
	dir   string
	owner string
}

// NewTracker keeps its files in dir (created); owner names this life of
// the process in them.
func NewTracker(dir, owner string) (*Tracker, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tracker dir %s: %w", dir, err)
	}
	return &Tracker{dir: dir, owner: owner}, nil
}

type trackedGroup struct {
	PGID  int    `json:"pgid"`
	Start uint64 `json:"start"`
}

type trackRecord struct {
	Owner  string         `json:"owner"`
	PID    int            `json:"pid"`
	Start  uint64         `json:"start"`
	Groups []trackedGroup `json:"groups,omitempty"`
	Drvs   []string       `json:"drvs"`
}

type trackedProc struct {
	t    *Tracker
	path string
	rec  trackRecord
}

func (t *Tracker) begin(pid int, jobs []*job) *trackedProc {
	p := &trackedProc{t: t, path: filepath.Join(t.dir, strconv.Itoa(pid)+".json"), rec: trackRecord{Owner: t.owner, PID: pid}}
	if st, ok := readStat(pid); ok {
		p.rec.Start = st.start
	}
	for _, j := range jobs {
		p.rec.Drvs = append(p.rec.Drvs, j.DrvPath)
	}
	p.write()
	return p
}

// groups records the builder groups now below nix-store, when they changed.
func (p *trackedProc) groups(gs groupSet) {
	var now []trackedGroup
	for g := range gs {
		if st, ok := readStat(g); ok && st.pgrp == g {
			now = append(now, trackedGroup{PGID: g, Start: st.start})
		}
	}
	slices.SortFunc(now, func(a, b trackedGroup) int { return a.PGID - b.PGID })
	if slices.Equal(now, p.rec.Groups) {
		return
	}
	p.rec.Groups = now
	p.write()
}

func (p *trackedProc) write() {
	b, err := json.Marshal(p.rec)
	if err != nil {
		return
	}
	tmp := p.path + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		_ = os.Rename(tmp, p.path)
	}
}

func (p *trackedProc) end() { _ = os.Remove(p.path) }

// Swept is what Sweep found.
type Swept struct {
	// Owners are the lives of the process that left files behind.
	Owners []string
	// Drvs are the derivations their nix-store processes were building.
	Drvs []string
	// Ended counts the processes and groups that were still running and
	// were stopped.
	Ended int
}

// Sweep ends every process a previous life left running, as named by the
// files under dir: nix-store first with SIGTERM (it then stops its own
// builders) and, after wait, SIGKILL; then every builder group whose
// leader is still the process recorded. It removes the files.
func Sweep(dir string, wait time.Duration) (Swept, error) {
	var sw Swept
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return sw, nil
	}
	if err != nil {
		return sw, fmt.Errorf("sweep %s: %w", dir, err)
	}
	for _, e := range ents {
		name := filepath.Join(dir, e.Name())
		if !strings.HasSuffix(e.Name(), ".json") {
			_ = os.Remove(name) // a .tmp cut short
			continue
		}
		b, err := os.ReadFile(name)
		var rec trackRecord
		if err == nil && json.Unmarshal(b, &rec) == nil {
			if !slices.Contains(sw.Owners, rec.Owner) {
				sw.Owners = append(sw.Owners, rec.Owner)
			}
			sw.Drvs = append(sw.Drvs, rec.Drvs...)
			sw.Ended += endTracked(rec, wait)
		}
		_ = os.Remove(name)
	}
	return sw, nil
}

// same reports whether pid is still the process that started at start.
func same(pid int, start uint64) bool {
	st, ok := readStat(pid)
	return ok && st.start == start && st.state != 'Z' && st.state != 'X'
}

func endTracked(rec trackRecord, wait time.Duration) int {
	ended := 0
	if rec.PID > 1 && same(rec.PID, rec.Start) {
		ended++
		_ = syscall.Kill(-rec.PID, syscall.SIGTERM)
		deadline := time.Now().Add(wait)
		for same(rec.PID, rec.Start) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
	}
	for _, g := range rec.Groups {
		if g.PGID > 1 && same(g.PGID, g.Start) {
			ended++
			_ = syscall.Kill(-g.PGID, syscall.SIGKILL)
		}
	}
	return ended
}
