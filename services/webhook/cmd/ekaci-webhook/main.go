// Command ekaci-webhook receives GitHub's pull_request deliveries, checks
// their signature, and records each as a change request.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/webhook"
)

func main() {
	fs := flag.NewFlagSet("ekaci-webhook", flag.ContinueOnError)
	addr := fs.String("listen", ":8080", "address GitHub's deliveries arrive on")
	secret := fs.String("webhook-secret", "", "the GitHub App's webhook secret (or EKACI_WEBHOOK_SECRET_FILE)")
	flagenv.Secret(fs, "webhook-secret")
	maxInFlight := fs.Int("max-in-flight", webhook.DefaultMaxInFlight, "deliveries handled at once (each may buffer 25 MB before its signature is checked); more are answered 503")
	readTimeout := fs.Duration("read-timeout", 30*time.Second, "the longest a client may take to send a whole delivery")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		if *secret == "" {
			return errors.New("no webhook secret: set --webhook-secret, EKACI_WEBHOOK_SECRET or EKACI_WEBHOOK_SECRET_FILE")
		}
		return webhook.Run(ctx, webhook.Config{Log: env.Log, Logger: env.Logger, Secret: []byte(*secret), Addr: *addr,
			MaxInFlight: *maxInFlight, Timeouts: webhook.Timeouts{Read: *readTimeout}})
	}))
}
