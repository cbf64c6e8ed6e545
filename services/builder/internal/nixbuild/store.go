package nixbuild

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/storepath"
	"github.com/nix-community/go-nix/pkg/wire"
)

// Store answers "which of these paths are valid?" from the Nix store
// itself, the only authority on it: a path can exist on disk and not be
// valid (a fixed-output derivation with a wrong hash may leave its output
// behind), and nothing a build prints says anything about validity.
//
// It keeps one `nix-store --serve` process (read-only: no --write) and asks
// it with the serve protocol's query-valid-paths command, which runs the
// same Store::isValidPath that `nix-store --check-validity` runs, without
// paying a process start (~40-80 ms here) per question. When that process
// cannot be started or dies, each question falls back to one
// `nix-store --check-validity --print-invalid` call.
type Store struct {
	nixOptions []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	in     *bufio.Writer
	inFile io.WriteCloser
	out    *bufio.Reader
	broken bool // serve failed once: use check-validity from now on
}

// NewStore returns a Store that passes nixOptions (name/value pairs) to
// every nix-store it runs.
func NewStore(nixOptions []string) *Store {
	return &Store{nixOptions: append([]string(nil), nixOptions...)}
}

// Serve protocol constants (nix/src/libstore/serve-protocol.hh, 2.x).
const (
	serveMagic1        = 0x390c9deb
	serveMagic2        = 0x5452eecb
	serveClientVersion = 2<<8 | 5
	cmdQueryValidPaths = 1
	maxPathLen         = 4096
)

// queryTimeout bounds one validity question; the store answers in
// milliseconds, so this only catches a wedged process.
var queryTimeout = 2 * time.Minute

// Invalid returns the paths of paths that are not valid in the store. An
// error means the store could not be asked; no path is then known valid.
func (s *Store) Invalid(ctx context.Context, paths []string) (map[string]bool, error) {
	for _, p := range paths {
		if _, err := storepath.FromAbsolutePath(p); err != nil {
			return nil, fmt.Errorf("%w: %q is not a store path: %w", ErrBadOptions, p, err)
		}
	}
	if len(paths) == 0 {
		return map[string]bool{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.broken {
		valid, err := s.serveQuery(ctx, paths)
		if err == nil {
			invalid := map[string]bool{}
			for _, p := range paths {
				if !valid[p] {
					invalid[p] = true
				}
			}
			return invalid, nil
		}
		s.stopLocked()
		// One restart: the process may have died of something passing.
		if valid, err2 := s.serveQuery(ctx, paths); err2 == nil {
			invalid := map[string]bool{}
			for _, p := range paths {
				if !valid[p] {
					invalid[p] = true
				}
			}
			return invalid, nil
		}
		s.stopLocked()
		s.broken = true
	}
	return checkValidity(ctx, paths, s.nixOptions)
}

// Close stops the serve process.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Store) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.inFile.Close() // EOF ends the serve loop
	done := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd, s.in, s.inFile, s.out = nil, nil, nil, nil
}

func (s *Store) startLocked() error {
	args := []string{"--serve"}
	for i := 0; i+1 < len(s.nixOptions); i += 2 {
		args = append(args, "--option", s.nixOptions[i], s.nixOptions[i+1])
	}
	cmd := exec.Command("nix-store", args...)
	// It dies with us, and never keeps a terminal's signals from us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = io.Discard
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nix-store --serve: %w", err)
	}
	s.cmd, s.inFile, s.in, s.out = cmd, in, bufio.NewWriter(in), bufio.NewReader(out)
	if err := wire.WriteUint64(s.in, serveMagic1); err != nil {
		return err
	}
	if err := s.in.Flush(); err != nil {
		return err
	}
	magic, err := wire.ReadUint64(s.out)
	if err != nil {
		return fmt.Errorf("nix-store --serve greeting: %w", err)
	}
	if magic != serveMagic2 {
		return fmt.Errorf("nix-store --serve greeting: magic %#x", magic)
	}
	if _, err := wire.ReadUint64(s.out); err != nil { // its protocol version
		return fmt.Errorf("nix-store --serve version: %w", err)
	}
	if err := wire.WriteUint64(s.in, serveClientVersion); err != nil {
		return err
	}
	return s.in.Flush()
}

func (s *Store) serveQuery(ctx context.Context, paths []string) (map[string]bool, error) {
	if s.cmd == nil {
		if err := s.startLocked(); err != nil {
			return nil, err
		}
	}
	// A deadline on a pipe to a child is awkward; a watchdog kills the
	// process instead, which fails the reads below.
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	proc := s.cmd.Process
	stop := context.AfterFunc(qctx, func() { _ = proc.Kill() })
	defer stop()

	w := s.in
	if err := errors.Join(
		wire.WriteUint64(w, cmdQueryValidPaths),
		wire.WriteBool(w, false), // lock: no temp roots (read-only anyway)
		wire.WriteBool(w, false), // substitute: never
		wire.WriteUint64(w, uint64(len(paths))),
	); err != nil {
		return nil, fmt.Errorf("ask nix-store --serve: %w", err)
	}
	for _, p := range paths {
		if err := wire.WriteString(w, p); err != nil {
			return nil, fmt.Errorf("ask nix-store --serve: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("ask nix-store --serve: %w", err)
	}
	n, err := wire.ReadUint64(s.out)
	if err != nil {
		return nil, fmt.Errorf("read nix-store --serve answer: %w", err)
	}
	if n > uint64(len(paths)) {
		return nil, fmt.Errorf("nix-store --serve answered %d valid paths for %d asked", n, len(paths))
	}
	valid := make(map[string]bool, n)
	for range n {
		p, err := wire.ReadString(s.out, maxPathLen)
		if err != nil {
			return nil, fmt.Errorf("read nix-store --serve answer: %w", err)
		}
		valid[p] = true
	}
	return valid, nil
}

// checkValidity is one `nix-store --check-validity --print-invalid` call.
func checkValidity(ctx context.Context, paths []string, nixOptions []string) (map[string]bool, error) {
	args := []string{"--check-validity", "--print-invalid"}
	for i := 0; i+1 < len(nixOptions); i += 2 {
		args = append(args, "--option", nixOptions[i], nixOptions[i+1])
	}
	args = append(args, "--")
	args = append(args, paths...)
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	cmd := exec.CommandContext(qctx, "nix-store", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-store --check-validity: %w: %s", err, strings.TrimSpace(lastBytes(stderr.String(), 2000)))
	}
	asked := map[string]bool{}
	for _, p := range paths {
		asked[p] = true
	}
	invalid := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if !asked[l] {
			return nil, fmt.Errorf("nix-store --check-validity printed %q, which was not asked", l)
		}
		invalid[l] = true
	}
	return invalid, nil
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
