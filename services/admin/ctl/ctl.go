package ctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/admin"
)

// Env is what ekactl reads and writes besides its arguments.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// IsTerminal says whether Stdout is a terminal (colours, a live
	// progress line).
	IsTerminal bool
}

// Terminal reports whether f is a terminal.
func Terminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// Exit statuses.
const (
	exitFailed = 1 // the server refused or failed the call
	exitUsage  = 2
)

type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// options are the global flags.
type options struct {
	server, token, ca, output, color, actor string
	tls                                     bool
	timeout                                 time.Duration
	after                                   uint64
}

// Run runs ekactl with args and returns its exit status.
func Run(ctx context.Context, args []string, env Env) int {
	o := &options{}
	root, c := newRoot(ctx, o, env)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if c.conn != nil {
		// Its resolver and balancer goroutines live until it is closed
		// (goleak in the tests, which run commands in-process, saw them).
		_ = c.conn.Close()
	}
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	}
	if st, ok := status.FromError(err); ok && st.Code() != 0 {
		fmt.Fprintf(env.Stderr, "%s: %s: %s\n", cmd.CommandPath(), st.Code(), st.Message())
		return exitFailed
	}
	fmt.Fprintf(env.Stderr, "%s: %v\n", cmd.CommandPath(), err)
	if errors.Is(err, errCall) {
		return exitFailed
	}
	return exitUsage
}

// errCall marks an error of a call made, not of the command line.
var errCall = errors.New("call failed")

func newRoot(ctx context.Context, o *options, env Env) (*cobra.Command, *cli) {
	root := &cobra.Command{
		Use:   "ekactl",
		Short: "administer an ekaci server through its admin API",
		Long: `ekactl administers an ekaci server through its admin API.

The server is --server, else EKACI_SERVER, else the all-in-one's socket
(unix://<data dir>/admin.sock). Over TCP, --token (or EKACI_ADMIN_TOKEN)
is sent as a bearer token. Output is a table, or JSON with -o json;
colours only on a terminal, never with NO_COLOR set.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetContext(ctx)
	pf := root.PersistentFlags()
	pf.StringVar(&o.server, "server", "", "admin API: unix:///path/to/admin.sock or host:port (default $EKACI_SERVER, else the all-in-one's socket)")
	pf.StringVar(&o.token, "token", "", "bearer token for TCP (default $EKACI_ADMIN_TOKEN)")
	pf.BoolVar(&o.tls, "tls", false, "speak TLS to a TCP server")
	pf.StringVar(&o.ca, "ca", "", "PEM file of the CA that signed the server's certificate (with --tls; default: the system's)")
	pf.StringVarP(&o.output, "output", "o", "table", "table or json")
	pf.StringVar(&o.color, "color", "auto", "auto (on a terminal without NO_COLOR), always or never")
	pf.StringVar(&o.actor, "as", "", "the name actions are recorded under (default $USER)")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up on a call (not a follow) after this long")
	pf.Uint64Var(&o.after, "after", 0, "read once the server has folded this fact (the number an action prints)")
	c := &cli{o: o, env: env}
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if o.output != "table" && o.output != "json" {
			return fmt.Errorf("--output %q: want table or json", o.output)
		}
		if o.color != "auto" && o.color != "always" && o.color != "never" {
			return fmt.Errorf("--color %q: want auto, always or never", o.color)
		}
		return nil
	}
	root.AddCommand(c.changesCmd(), c.changeCmd(), c.jobsetCmd(), c.drvCmd(), c.failuresCmd(), c.logsCmd(), c.watchCmd(),
		c.retryCmd(), c.cancelCmd(), c.restartCmd(), c.buildersCmd(), c.queuesCmd(),
		c.approveCmd(), c.revokeCmd(), c.approvalsCmd(), c.drainCmd(), c.resumeCmd(), c.rebuildCmd())
	return root, c
}

// cli holds what the commands share: the flags, the environment, and the
// connection once made.
type cli struct {
	o    *options
	env  Env
	conn *grpc.ClientConn
}

// DefaultServer is the all-in-one's socket under the default data dir.
func DefaultServer() string {
	return "unix://" + filepath.Join(service.DefaultDataDir(), "admin.sock")
}

// client connects to the server (once).
func (c *cli) client() (adminv1.AdminClient, error) {
	if c.conn != nil {
		return adminv1.NewAdminClient(c.conn), nil
	}
	target := c.o.server
	if target == "" {
		target = c.env.Getenv("EKACI_SERVER")
	}
	if target == "" {
		target = DefaultServer()
	}
	creds := insecure.NewCredentials()
	if c.o.tls {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.o.ca != "" {
			pem, err := os.ReadFile(c.o.ca)
			if err != nil {
				return nil, fmt.Errorf("--ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca %s: no PEM certificate in it", c.o.ca)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", target, err)
	}
	c.conn = conn
	return adminv1.NewAdminClient(conn), nil
}

// ctx is a call's context: the token and the actor in its metadata, and
// the timeout unless it follows.
func (c *cli) ctx(parent context.Context, follow bool) (context.Context, context.CancelFunc) {
	tok := c.o.token
	if tok == "" {
		tok = c.env.Getenv("EKACI_ADMIN_TOKEN")
	}
	who := c.o.actor
	if who == "" {
		who = c.env.Getenv("USER")
	}
	md := metadata.MD{}
	if tok != "" {
		md.Set("authorization", "Bearer "+tok)
	}
	if who != "" {
		md.Set(admin.ActorHeader, who)
	}
	ctx := metadata.NewOutgoingContext(parent, md)
	if follow {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.o.timeout)
}

// colour says whether to colour the output.
func (c *cli) colour() bool {
	switch c.o.color {
	case "always":
		return true
	case "never":
		return false
	}
	return c.env.IsTerminal && c.env.Getenv("NO_COLOR") == ""
}

// printJSON writes m as indented JSON with the proto field names.
// protojson's whitespace is deliberately unstable between builds:
// compacted and indented again, the output is the same every time.
func (c *cli) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return err
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = c.env.Stdout.Write(out.Bytes())
	return err
}

func (c *cli) json() bool { return c.o.output == "json" }

// short keeps the first n characters of an id, for tables.
func short(id string, n int) string {
	if len(id) <= n {
		return id
	}
	return id[:n]
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) > n {
		return string([]rune(s)[:n-1]) + "…"
	}
	return s
}
