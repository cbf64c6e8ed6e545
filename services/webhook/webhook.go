// Package webhook receives GitHub webhooks and records a change request for
// every pull request opened, reopened or updated.
//
// It decides which GitHub deliveries become change requests
// (change_requested).
//
// The signature (X-Hub-Signature-256, HMAC-SHA256 of the raw body) is
// checked in constant time before the body is parsed; there is no SHA-1
// fallback and no unsigned mode: the stage refuses to start without a
// secret. A delivery is acknowledged only once its fact is durably in the
// event log. A change (repository, head, base) is recorded once: GitHub's
// redeliveries, even days later, find it already known, unless its
// checkout failed, when a redelivery requests it again (package request).
// Commits must be full commit ids.
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
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/gitter/request"
)

// ErrNoSecret is returned when the stage is started without a secret.
var ErrNoSecret = errors.New("no webhook secret: set --webhook-secret or EKACI_WEBHOOK_SECRET(_FILE); unsigned webhooks are never accepted")

// maxBody is GitHub's own cap on webhook payloads.
const maxBody = 25 << 20

// Config wires the stage.
type Config struct {
	Log    *eventlog.Log
	Logger zerolog.Logger
	Secret []byte
	Addr   string // listen address, e.g. :8080
	// MaxInFlight bounds the requests handled at once (default 16: at
	// most 16 bodies of 25 MB in memory); more are answered 503.
	MaxInFlight int
	Timeouts    Timeouts
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
	log      *eventlog.Log
	logger   zerolog.Logger
	secret   []byte
	inFlight chan struct{} // one token per request being handled
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
	return &Handler{log: cfg.Log, logger: cfg.Logger, secret: cfg.Secret, inFlight: make(chan struct{}, n)}, nil
}

// Run serves webhooks on cfg.Addr until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	h, err := NewHandler(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("webhook listen %s: %w", cfg.Addr, err)
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
	payload, err := github.ParseWebHook(github.WebHookType(r), body)
	if err != nil {
		http.Error(w, fmt.Sprintf("cannot parse %s payload: %v", github.WebHookType(r), err), http.StatusBadRequest)
		return
	}
	pr, ok := payload.(*github.PullRequestEvent)
	if !ok {
		w.WriteHeader(http.StatusAccepted) // ping and events we do not act on
		return
	}
	switch pr.GetAction() {
	case "opened", "reopened", "synchronize":
	default:
		w.WriteHeader(http.StatusAccepted)
		return
	}
	req := &eventsv1.ChangeRequested{
		RepoUrl:    pr.GetRepo().GetCloneURL(),
		RepoName:   pr.GetRepo().GetFullName(),
		HeadCommit: pr.GetPullRequest().GetHead().GetSHA(),
		BaseCommit: pr.GetPullRequest().GetBase().GetSHA(),
		Source:     "webhook",
	}
	if req.RepoUrl == "" || req.HeadCommit == "" {
		http.Error(w, "pull_request payload lacks repository clone_url or head sha", http.StatusBadRequest)
		return
	}
	eventID := eventlog.WebhookRequestedID(delivery, eventlog.ChangeID(req.GetRepoUrl(), req.GetHeadCommit(), req.GetBaseCommit()))
	got, err := request.Record(r.Context(), h.log, req, eventID, "webhook pull_request payload")
	switch {
	case errors.Is(err, request.ErrBadRequest):
		log.Warn().Err(err).Msg("refused a pull_request payload")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		log.Error().Err(err).Msg("could not record the change; GitHub will see a 503 and may redeliver")
		http.Error(w, "could not record the change", http.StatusServiceUnavailable)
		return
	case got.Joined:
		log.Info().Str("change", got.ChangeID).Msg("change already known")
	default:
		log.Info().Str("change", got.ChangeID).Int("attempt", got.Attempt).Str("repo", req.GetRepoName()).Str("head", req.GetHeadCommit()).Msg("change requested")
	}
	w.WriteHeader(http.StatusAccepted)
}
