// Package webhook receives a GitHub App's webhooks and turns them into
// facts: a change request for every pull request head, default-branch push
// and merge group to test, and what each App installation may see.
//
// It decides which GitHub deliveries become change requests
// (change_requested, with their GitHubOrigin) and records installations
// (github_installation_changed); the approval of outside contributors is
// decided here too (policy.go).
//
// The signature (X-Hub-Signature-256, HMAC-SHA256 of the raw body) is
// checked in constant time before the body is parsed; there is no SHA-1
// fallback and no unsigned mode: the stage refuses to start without a
// secret. A wrong or missing signature is 401, logged without the body.
// A delivery is acknowledged only once its fact is durably in the event
// log, and recorded in a table of handled deliveries (X-GitHub-Delivery,
// kept 7 days): a redelivery, however late, gets the first answer and does
// nothing. Payloads are decoded for what ekaci reads only (payload.go):
// a field ekaci does not read never makes a delivery fail, and an event or
// action ekaci does not act on is 204. Commits must be full commit ids.
//
// Unauthenticated clients are bounded before the signature can be
// checked: a request waits at most ReadTimeout for its body (capped at
// GitHub's 25 MB), and at most MaxInFlight requests are handled at once;
// one over the bound is answered 503 at once, before its body is read, so
// slow clients hold neither memory nor the server.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/githubapp"
)

// ErrNoSecret is returned when the stage is started without a secret.
var ErrNoSecret = errors.New("no webhook secret: set --webhook-secret or EKACI_WEBHOOK_SECRET(_FILE); unsigned webhooks are never accepted")

// ErrApprovalNeedsApp is returned when approval is required but no GitHub
// App is configured to post the approval check run and read permissions.
var ErrApprovalNeedsApp = errors.New("--github-require-approval needs the GitHub App (--github-app-id, --github-private-key)")

// maxBody is GitHub's own cap on webhook payloads.
const maxBody = 25 << 20

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	Logger zerolog.Logger
	Secret []byte
	Addr   string // listen address, e.g. :8080
	// Listener, when set, is served instead of listening on Addr.
	Listener net.Listener
	// Replicas of the deliveries table when Run creates it.
	Replicas int
	// MaxInFlight bounds the requests handled at once (default 16: at
	// most 16 bodies of 25 MB in memory); more are answered 503.
	MaxInFlight int
	Timeouts    Timeouts
	// Deliveries is the table of handled deliveries (nil: Run opens it on
	// the log's JetStream; NewHandler without one remembers nothing
	// beyond the stream's duplicate window).
	Deliveries *Deliveries
	// Pulls indexes pull requests' heads and the changes requested per
	// head (nil: Run opens it; without one nothing is superseded,
	// cancelled on close or restarted on a re-run).
	Pulls *Pulls
	// Policy says which pull requests to test (drafts, approval).
	Policy Policy
	// App is the GitHub App, needed when Policy.RequireApproval is set
	// (the approval check run, a clicker's permission).
	App *githubapp.App
}

// DefaultMaxInFlight is Config.MaxInFlight's default.
const DefaultMaxInFlight = 16

// Timeouts bound each connection; zero fields take the defaults.
type Timeouts struct {
	ReadHeader time.Duration // default 10 s
	// Read bounds reading a whole request, body included (default 30 s:
	// GitHub sends at most 25 MB and waits 10 s for the answer).
	Read  time.Duration
	Write time.Duration // from the end of the headers to the answer's end; default 30 s
	Idle  time.Duration // a kept-alive connection waiting for its next request; default 60 s
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.ReadHeader, 10*time.Second)
	def(&t.Read, 30*time.Second)
	def(&t.Write, 30*time.Second)
	def(&t.Idle, 60*time.Second)
	return t
}

// Handler is the webhook HTTP handler.
type Handler struct {
	log        *eventlog.Log
	logger     zerolog.Logger
	secret     []byte
	inFlight   chan struct{} // one token per request being handled
	deliveries *Deliveries
	pulls      *Pulls
	policy     Policy
	app        *githubapp.App
}

// NewHandler returns the handler, or ErrNoSecret.
func NewHandler(cfg Config) (*Handler, error) {
	if len(cfg.Secret) == 0 {
		return nil, ErrNoSecret
	}
	n := cfg.MaxInFlight
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	if cfg.Policy.RequireApproval && cfg.App == nil {
		return nil, ErrApprovalNeedsApp
	}
	return &Handler{log: cfg.Events, logger: cfg.Logger, secret: cfg.Secret, inFlight: make(chan struct{}, n),
		deliveries: cfg.Deliveries, pulls: cfg.Pulls, policy: cfg.Policy, app: cfg.App}, nil
}

// Run serves webhooks on cfg.Addr until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Deliveries == nil {
		d, err := OpenDeliveries(ctx, cfg.Events.JetStream(), cfg.Replicas, 0)
		if err != nil {
			return err
		}
		cfg.Deliveries = d
	}
	if cfg.Pulls == nil {
		p, err := OpenPulls(ctx, cfg.Events.JetStream(), cfg.Replicas, 0)
		if err != nil {
			return err
		}
		cfg.Pulls = p
	}
	h, err := NewHandler(cfg)
	if err != nil {
		return err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("webhook listen %s: %w", cfg.Addr, err)
		}
	}
	return Serve(ctx, ln, h, cfg.Timeouts)
}

// Serve serves h on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, t Timeouts) error {
	t = t.withDefaults()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: t.Write, IdleTimeout: t.Idle, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// Verify checks a X-Hub-Signature-256 header against body.
func Verify(secret, body []byte, header string) bool {
	sig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "webhooks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	// Bounded before the body is read: the signature cannot be checked
	// without it, so until then the client is anyone.
	select {
	case h.inFlight <- struct{}{}:
		defer func() { <-h.inFlight }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests in flight", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	delivery := r.Header.Get("X-GitHub-Delivery")
	log := h.logger.With().Str("delivery", delivery).Str("event", r.Header.Get("X-GitHub-Event")).Logger()
	if !Verify(h.secret, body, r.Header.Get("X-Hub-Signature-256")) {
		log.Warn().Msg("refused a webhook with a missing or wrong signature")
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	event := github.WebHookType(r)
	if event == "ping" {
		log.Info().Msg("ping")
		w.WriteHeader(http.StatusOK)
		return
	}
	if _, handled := shapes[event]; !handled {
		w.WriteHeader(http.StatusNoContent) // an event ekaci does not act on
		return
	}
	if h.deliveries != nil && delivery != "" {
		if o, seen, err := h.deliveries.Get(r.Context(), delivery); err != nil {
			log.Error().Err(err).Msg("cannot read the deliveries table; GitHub will see a 503 and may redeliver")
			http.Error(w, "deliveries table unavailable", http.StatusServiceUnavailable)
			return
		} else if seen {
			log.Info().Int("status", o.Status).Msg("delivery already handled")
			writeOutcome(w, Outcome{Status: o.Status, Message: "already handled: " + o.Message})
			return
		}
	}
	payload, err := Parse(event, body)
	if err != nil {
		log.Warn().Err(err).Msg("refused an unreadable payload")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o, err := h.handle(r.Context(), log, event, delivery, payload)
	if err != nil {
		log.Error().Err(err).Msg("could not handle the delivery; GitHub will see a 503 and may redeliver")
		http.Error(w, "could not handle the delivery", http.StatusServiceUnavailable)
		return
	}
	if h.deliveries != nil && delivery != "" {
		if err := h.deliveries.Put(r.Context(), delivery, o); err != nil {
			// Handled and durable: a redelivery repeats guarded appends.
			log.Warn().Err(err).Msg("could not record the delivery as handled")
		}
	}
	writeOutcome(w, o)
}

func writeOutcome(w http.ResponseWriter, o Outcome) {
	if o.Status == http.StatusNoContent {
		w.WriteHeader(o.Status)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(o.Status)
	fmt.Fprintln(w, o.Message)
}
