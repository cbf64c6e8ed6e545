// Command ekaci-webhook receives a GitHub App's deliveries, checks their
// signature, and records the changes to test and the App's installations.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/githubapp"
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
	gh := githubapp.AddFlags(fs)
	var policy webhook.Policy
	webhook.AddPolicyFlags(fs, &policy)
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		if *secret == "" {
			return errors.New("no webhook secret: set --webhook-secret, EKACI_WEBHOOK_SECRET or EKACI_WEBHOOK_SECRET_FILE")
		}
		// The deliveries table gets the streams' replicas: service.Main
		// defines --stream-replicas (defining it here too panicked at start).
		replicas, err := strconv.Atoi(fs.Lookup("stream-replicas").Value.String())
		if err != nil {
			return fmt.Errorf("--stream-replicas: %w", err)
		}
		cfg := webhook.Config{Events: env.Events, Logger: env.Logger, Secret: []byte(*secret), Addr: *addr, Replicas: replicas,
			MaxInFlight: *maxInFlight, Timeouts: webhook.Timeouts{Read: *readTimeout}, Policy: policy}
		if gh.Configured() {
			app, err := gh.App()
			if err != nil {
				return err
			}
			cfg.App = app
		}
		return webhook.Run(ctx, cfg)
	}))
}
