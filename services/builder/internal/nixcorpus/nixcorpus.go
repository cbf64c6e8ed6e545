// Package nixcorpus is a differential corpus for tests of the builder:
// small offline derivations of the kinds real repositories hold
// (fixed-output with right and wrong hashes, outputs without `out`,
// reference and requisite checks, cycles, exit codes, signals, forged
// `@nix` messages naming other derivations, a 5 MB line, outputs already
// valid), instantiated fresh for every salt, and their ground truth as
// plain Nix sees it: each built alone with `nix-store --realise` and judged
// by reading validity from the store.
package nixcorpus

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

//go:embed corpus.nix
var corpusNix []byte

// Class is a ground-truth verdict.
type Class string

const (
	Succeeded Class = "succeeded"
	Failed    Class = "failed"
	TimedOut  Class = "timed-out"
)

// Case is one derivation of the corpus and what it is meant to be.
type Case struct {
	Name string
	Want Class
}

// Cases are the corpus's cases (every attribute but the prerequisites).
var Cases = []Case{
	{"ok", Succeeded}, {"selfRef", Succeeded}, {"exit1", Failed}, {"exit2", Failed}, {"exit42", Failed},
	{"killed", Failed}, {"killedTerm", Failed}, {"noOutput", Failed},
	{"fodFlatOK", Succeeded}, {"fodFlatBad", Failed}, {"fodRecOK", Succeeded}, {"fodRecBad", Failed},
	{"multi", Succeeded}, {"multiMissing", Failed}, {"usesSecond", Succeeded},
	{"allowedRefsPass", Succeeded}, {"allowedRefsFail", Failed},
	{"disallowedRefsPass", Succeeded}, {"disallowedRefsFail", Failed},
	{"allowedReqsPass", Succeeded}, {"allowedReqsFail", Failed},
	{"disallowedReqsPass", Succeeded}, {"disallowedReqsFail", Failed},
	{"outputCycle", Failed}, {"longLine", Succeeded}, {"longLineFail", Failed},
	{"silent", TimedOut}, {"prebuilt", Succeeded}, {"forger", Succeeded}, {"forgerFails", Failed},
}

// prerequisites are built before a run: the inputs of the cases (a
// derivation handed to the builder has every input built) and the output
// that must already be valid.
var prerequisites = []string{"depA", "depB", "depMulti", "depPrebuilt"}

// MaxSilent is the no-output timeout the corpus is meant to be built
// with: "silent" exceeds it, nothing else comes close.
const MaxSilent = 2 * time.Second

// NixOptions keep every Nix call offline.
var NixOptions = []string{"substituters", ""}

// Instance is the corpus instantiated with one salt.
type Instance struct {
	Salt string
	// Drvs maps each case to its .drv path.
	Drvs map[string]string
}

// Names returns the case names in corpus order.
func Names() []string {
	names := make([]string, len(Cases))
	for i, c := range Cases {
		names[i] = c.Name
	}
	return names
}

// Want returns the class a case is meant to have.
func Want(name string) Class {
	for _, c := range Cases {
		if c.Name == name {
			return c.Want
		}
	}
	return ""
}

// Instantiate writes the corpus under dir, instantiates it with salt and
// builds its prerequisites.
func Instantiate(ctx context.Context, dir, salt string) (*Instance, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "corpus.nix")
	if err := os.WriteFile(file, corpusNix, 0o644); err != nil {
		return nil, err
	}
	args := []string{file, "--option", "substituters", "",
		"--argstr", "salt", salt,
		"--argstr", "flatHash", sha256Hex([]byte("fod-flat-" + salt)),
		"--argstr", "recHash", sha256Hex(narOfFile([]byte("fod-rec-" + salt)))}
	attrs := append(slices.Clone(prerequisites), Names()...)
	for _, a := range attrs {
		args = append(args, "-A", a)
	}
	out, err := run(ctx, "nix-instantiate", args...)
	if err != nil {
		return nil, err
	}
	paths := strings.Fields(out)
	if len(paths) != len(attrs) {
		return nil, fmt.Errorf("nix-instantiate printed %d paths for %d attributes", len(paths), len(attrs))
	}
	in := &Instance{Salt: salt, Drvs: map[string]string{}}
	var pre []string
	for i, a := range attrs {
		p, _, _ := strings.Cut(paths[i], "!")
		if i < len(prerequisites) {
			pre = append(pre, p)
			continue
		}
		in.Drvs[a] = p
	}
	if _, err := run(ctx, "nix-store", append([]string{"--realise", "--option", "substituters", "", "--builders", ""}, pre...)...); err != nil {
		return nil, fmt.Errorf("build the prerequisites: %w", err)
	}
	return in, nil
}

// Truth is the ground truth of one case: plain Nix, alone.
type Truth struct {
	Class Class
	// Exit is nix-store's exit status.
	Exit int
}

// GroundTruth builds each case of in alone with `nix-store --realise`
// (max-silent-time MaxSilent) and reads the validity of every output
// from the store: all valid is succeeded; otherwise Nix's exit status 101
// (its timeout bit, alone) is timed out and anything else failed.
func GroundTruth(ctx context.Context, in *Instance) (map[string]Truth, error) {
	// A few at a time: each is its own nix-store, independent of the others.
	var mu sync.Mutex
	truth := map[string]Truth{}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for _, name := range Names() {
		g.Go(func() error {
			t, err := truthOf(ctx, in.Drvs[name])
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			mu.Lock()
			truth[name] = t
			mu.Unlock()
			return nil
		})
	}
	return truth, g.Wait()
}

func truthOf(ctx context.Context, drv string) (Truth, error) {
	{
		cmd := exec.CommandContext(ctx, "nix-store", "--realise", drv, "--option", "substituters", "",
			"--builders", "", "--option", "max-silent-time", strconv.Itoa(int(MaxSilent.Seconds())))
		cmd.Stdout, cmd.Stderr = nil, nil
		exit := 0
		if err := cmd.Run(); err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				return Truth{}, fmt.Errorf("nix-store --realise: %w", err)
			}
			exit = ee.ExitCode()
		}
		outs, err := run(ctx, "nix-store", "--query", "--outputs", drv)
		if err != nil {
			return Truth{}, err
		}
		invalid, err := run(ctx, "nix-store", append([]string{"--check-validity", "--print-invalid"}, strings.Fields(outs)...)...)
		if err != nil {
			return Truth{}, err
		}
		t := Truth{Class: Succeeded, Exit: exit}
		switch {
		case strings.TrimSpace(invalid) == "":
		case exit == 101:
			t.Class = TimedOut
		default:
			t.Class = Failed
		}
		return t, nil
	}
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		tail := errb.String()
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args[:min(len(args), 4)], " "), err, tail)
	}
	return out.String(), nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// narOfFile is the NAR serialisation of one regular, non-executable file:
// what a recursive fixed-output hash is taken over.
func narOfFile(contents []byte) []byte {
	var b bytes.Buffer
	str := func(s []byte) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		b.Write(n[:])
		b.Write(s)
		if pad := len(s) % 8; pad != 0 {
			b.Write(make([]byte, 8-pad))
		}
	}
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		str([]byte(s))
	}
	str(contents)
	str([]byte(")"))
	return b.Bytes()
}
