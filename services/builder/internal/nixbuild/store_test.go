package nixbuild

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestStoreAnswersFromTheStore checks the serve session against the store
// as it changes under it (nothing is cached: a path built or deleted
// after the session started is seen as it is now) and against
// `nix-store --check-validity`, which must agree.
func TestStoreAnswersFromTheStore(t *testing.T) {
	drv, _ := instantiate(t, "echo built > $out")
	outB, err := exec.Command("nix-store", "-q", "--outputs", drv).Output()
	if err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(string(outB))
	const missing = "/nix/store/00000000000000000000000000000000-missing"
	ctx := context.Background()
	s := NewStore(noSubst)
	defer s.Close()
	ask := func(want map[string]bool) {
		t.Helper()
		paths := []string{drv, out, missing}
		got, err := s.Invalid(ctx, paths)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := checkValidity(ctx, paths, noSubst)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if got[p] != want[p] || ref[p] != want[p] {
				t.Fatalf("%s: serve says invalid=%v, check-validity %v, want %v", p, got[p], ref[p], want[p])
			}
		}
	}
	ask(map[string]bool{out: true, missing: true})
	if err := exec.Command("nix-store", "--realise", drv, "--option", "substituters", "").Run(); err != nil {
		t.Fatal(err)
	}
	ask(map[string]bool{missing: true})
	if err := exec.Command("nix-store", "--delete", out).Run(); err != nil {
		t.Fatal(err)
	}
	ask(map[string]bool{out: true, missing: true})
	if s.broken {
		t.Fatal("the serve session broke; the answers came from the fallback")
	}
	if _, err := s.Invalid(ctx, []string{"/etc/passwd"}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("a path outside the store: %v, want ErrBadOptions", err)
	}
}

// BenchmarkValidity is what the store checks cost per batch: one question
// about 32 derivations' outputs (and their .drv files), asked over the
// serve session and, for comparison, with one `nix-store --check-validity`
// process, as each batch would without the session.
func BenchmarkValidity(b *testing.B) {
	if _, err := exec.LookPath("nix-store"); err != nil {
		b.Skip("nix-store not on PATH")
	}
	out, err := exec.Command("sh", "-c", "ls -d /nix/store/*-* | head -64").Output()
	if err != nil {
		b.Fatal(err)
	}
	paths := strings.Fields(string(out))
	ctx := context.Background()
	b.Run("serve session", func(b *testing.B) {
		s := NewStore(noSubst)
		defer s.Close()
		if _, err := s.Invalid(ctx, paths); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.Invalid(ctx, paths); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check-validity process", func(b *testing.B) {
		for b.Loop() {
			if _, err := checkValidity(ctx, paths, noSubst); err != nil {
				b.Fatal(err)
			}
		}
	})
}
