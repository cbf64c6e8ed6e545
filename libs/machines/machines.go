// Package machines describes the builders ekaci sends work to: the
// Topology that yields both the router's routes and the builder's pools,
// Nix's machines-file format (the --builders / /etc/nix/machines syntax)
// for remote builders, and each remote builder's health, checked with
// `nix store ping`, so work goes only to builders that answer.
package machines

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Machine is one line of a machines file.
type Machine struct {
	URI               string
	Systems           []string
	SSHKey            string
	MaxJobs           int
	SpeedFactor       int
	Features          []string // supportedFeatures
	MandatoryFeatures []string
	PublicHostKey     string
}

// Parse reads a machines file: one builder per line, fields separated by
// spaces, "-" for an empty field, "#" comments. Errors name the line.
func Parse(text string) ([]Machine, error) {
	var out []Machine
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		// Several machines may also share a line, separated by ';'.
		for _, spec := range strings.Split(line, ";") {
			f := strings.Fields(spec)
			if len(f) == 0 {
				continue
			}
			if len(f) > 8 {
				return nil, fmt.Errorf("machines line %d: %d fields, at most 8: uri systems ssh-key max-jobs speed-factor features mandatory-features host-key", n, len(f))
			}
			get := func(i int) string {
				if i < len(f) && f[i] != "-" {
					return f[i]
				}
				return ""
			}
			list := func(i int) []string {
				if s := get(i); s != "" {
					return strings.Split(s, ",")
				}
				return nil
			}
			m := Machine{URI: f[0], Systems: list(1), SSHKey: get(2), MaxJobs: 1, SpeedFactor: 1,
				Features: list(5), MandatoryFeatures: list(6), PublicHostKey: get(7)}
			for i, dst := range map[int]*int{3: &m.MaxJobs, 4: &m.SpeedFactor} {
				if s := get(i); s != "" {
					v, err := strconv.Atoi(s)
					if err != nil || v < 1 {
						return nil, fmt.Errorf("machines line %d: field %d (%s) is %q: want a whole number ≥ 1", n, i+1, []string{"", "", "", "max-jobs", "speed-factor"}[i], s)
					}
					*dst = v
				}
			}
			if !strings.Contains(m.URI, "://") && !strings.HasPrefix(m.URI, "/") && !strings.Contains(m.URI, "@") && !strings.Contains(m.URI, "?") {
				// Nix reads a bare host name as ssh://host.
				m.URI = "ssh://" + m.URI
			}
			if len(m.Systems) == 0 {
				return nil, fmt.Errorf("machines line %d: %s serves no system: give them as the second field, e.g. x86_64-linux,aarch64-linux", n, m.URI)
			}
			// Mandatory features are supported features too.
			for _, f := range m.MandatoryFeatures {
				if !slices.Contains(m.Features, f) {
					m.Features = append(m.Features, f)
				}
			}
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// Line formats m back into the machines format, for nix-build --builders.
func (m Machine) Line() string {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	return strings.Join([]string{m.URI, dash(strings.Join(m.Systems, ",")), dash(m.SSHKey),
		strconv.Itoa(m.MaxJobs), strconv.Itoa(m.SpeedFactor), dash(strings.Join(m.Features, ",")),
		dash(strings.Join(m.MandatoryFeatures, ",")), dash(m.PublicHostKey)}, " ")
}

// Can reports whether m builds for system with every feature required.
// A machine with mandatory features takes only derivations that ask for
// all of them, as Nix does.
func (m Machine) Can(system string, required []string) bool {
	return slices.Contains(m.Systems, system) && features(m.Features, m.MandatoryFeatures, required)
}

// Pinger checks one store URI; the default runs `nix store ping`.
type Pinger func(ctx context.Context, uri string) error

// NixPing runs `nix store ping --store uri` (Nix 2.8 needs the nix-command
// feature for it).
func NixPing(ctx context.Context, uri string) error {
	cmd := exec.CommandContext(ctx, "nix", "--extra-experimental-features", "nix-command", "store", "ping", "--store", uri)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = strings.TrimSpace(msg[i+1:])
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("nix store ping %s: %s", uri, msg)
	}
	return nil
}

// Health keeps each machine's last health check.
type Health struct {
	machines []Machine
	ping     Pinger
	every    time.Duration
	timeout  time.Duration
	log      zerolog.Logger

	mu      sync.Mutex
	status  map[string]error // uri -> last check (nil: healthy); absent: not checked
	changed chan struct{}    // closed and replaced on every change
}

// NewHealth checks machines with ping every interval.
func NewHealth(machines []Machine, ping Pinger, every time.Duration, log zerolog.Logger) *Health {
	if ping == nil {
		ping = NixPing
	}
	if every <= 0 {
		every = 30 * time.Second
	}
	return &Health{machines: machines, ping: ping, every: every, timeout: 20 * time.Second, log: log,
		status: map[string]error{}, changed: make(chan struct{})}
}

// CheckNow checks every machine once, concurrently.
func (h *Health) CheckNow(ctx context.Context) {
	var wg sync.WaitGroup
	for _, m := range h.machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, h.timeout)
			err := h.ping(cctx, m.URI)
			cancel()
			if ctx.Err() != nil {
				return
			}
			h.set(m.URI, err)
		}()
	}
	wg.Wait()
}

func (h *Health) set(uri string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, seen := h.status[uri]
	h.status[uri] = err
	if seen && (prev == nil) == (err == nil) {
		return
	}
	if err != nil {
		h.log.Warn().Str("builder", uri).Err(err).Msg("remote builder unhealthy: it gets no work until it answers again")
	} else {
		h.log.Info().Str("builder", uri).Msg("remote builder healthy")
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// Run checks every machine now and then every interval until ctx ends,
// and returns once its last check has finished. It blocks: whoever starts
// it in a goroutine owns it and should wait for it to return.
func (h *Health) Run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		h.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Healthy reports whether uri answered its last check.
func (h *Health) Healthy(uri string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	err, seen := h.status[uri]
	return seen && err == nil
}

// Usable lists the healthy machines that can build for system with the
// required features.
func (h *Health) Usable(system string, required []string) []Machine {
	var out []Machine
	for _, m := range h.machines {
		if m.Can(system, required) && h.Healthy(m.URI) {
			out = append(out, m)
		}
	}
	return out
}

// WaitUsable blocks until some healthy machine can build for system with
// the required features, and returns the usable ones.
func (h *Health) WaitUsable(ctx context.Context, system string, required []string) ([]Machine, error) {
	for {
		h.mu.Lock()
		ch := h.changed
		h.mu.Unlock()
		if ms := h.Usable(system, required); len(ms) > 0 {
			return ms, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// ReadFile parses the machines file at path.
func ReadFile(path string) ([]Machine, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("machines file: %w", err)
	}
	ms, err := Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ms, nil
}
