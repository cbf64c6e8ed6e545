// Command ekaci-admin is the admin API on its own, for a mesh: it folds
// its read model from the event log and serves ekaci.admin.v1.Admin on a
// unix socket and/or TCP, and build logs over HTTP.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/admin"
)

func main() {
	fs := flag.NewFlagSet("ekaci-admin", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "/var/lib/ekaci", "holds admin.db, the admin read model (rebuilt from the stream when deleted)")
	var cfg admin.Config
	fs.StringVar(&cfg.LogDir, "log-dir", "", "the builders' log dir, when this machine shares it (empty: logs from the stream only)")
	fs.StringVar(&cfg.Socket, "admin-socket", "", "unix socket of the admin API, mode 0600, no token needed (empty: none)")
	fs.StringVar(&cfg.Addr, "admin-addr", ":7070", "TCP address of the admin API (empty: none)")
	fs.StringVar(&cfg.Token, "admin-token", "", "bearer token calls over TCP need (reads too, unless --admin-open-reads)")
	flagenv.Secret(fs, "admin-token")
	fs.BoolVar(&cfg.OpenReads, "admin-open-reads", false, "let reads over TCP go without the token")
	fs.StringVar(&cfg.TLSCert, "admin-tls-cert", "", "PEM certificate: TLS on --admin-addr")
	fs.StringVar(&cfg.TLSKey, "admin-tls-key", "", "PEM key of --admin-tls-cert")
	fs.StringVar(&cfg.HTTPAddr, "logs-addr", "", "address serving GET /logs/<drv>[/<attempt>] (empty: off)")
	fs.Var((*flagenv.List)(&cfg.Approved), "github-approved", "the webhook's --github-approved, for ListApprovals to show them as configured (the webhook decides with its own)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		unlock, err := service.Lock(*dataDir)
		if err != nil {
			return err
		}
		defer unlock()
		cfg.Events, cfg.DataDir, cfg.Logger = env.Events, *dataDir, env.Logger
		return admin.Run(ctx, cfg)
	}))
}
