package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// version is ekaci's version, set at link time
// (-ldflags "-X main.version=v1.2.3"); empty: the module's version, or
// the commit it was built from.
var version = ""

// versionCommand is `ekaci version`.
func versionCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var natsURL string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "print the versions of ekaci, and of the Nix and nats-server it runs with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			fmt.Fprintf(stdout, "ekaci %s (%s)\n", ekaciVersion(), runtime.Version())
			fmt.Fprintf(stdout, "nix %s\n", nixVersion(ctx))
			if natsURL == "" {
				natsURL = getenv("EKACI_NATS_URL")
			}
			if natsURL == "" {
				fmt.Fprintf(stdout, "nats-server %s (embedded)\n", server.VERSION)
				return nil
			}
			fmt.Fprintf(stdout, "nats-server %s (at %s)\n", externalVersion(natsURL), natsURL)
			return nil
		},
	}
	cmd.Flags().StringVar(&natsURL, "nats-url", "", "the external NATS ekaci runs with (default $EKACI_NATS_URL; none: the embedded server's version)")
	return cmd
}

// externalVersion asks an external NATS server its version, or says why
// it could not.
func externalVersion(url string) string {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second), nats.NoReconnect())
	if err != nil {
		return fmt.Sprintf("unavailable (%v)", err)
	}
	defer nc.Close()
	return nc.ConnectedServerVersion()
}

// ekaciVersion reads what the build recorded.
func ekaciVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		return "devel-" + rev[:min(12, len(rev))] + modified
	}
	if v == "" {
		return "(devel)"
	}
	return v
}

// nixVersion asks the nix-store on PATH (what ekaci builds with), or
// says why it could not.
func nixVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "nix-store", "--version").Output()
	if err != nil {
		return fmt.Sprintf("unavailable (nix-store --version: %v)", err)
	}
	// "nix-store (Nix) 2.8.0"
	line := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(line, ' '); i >= 0 {
		return line[i+1:]
	}
	return line
}
