// Package webhook receives GitHub webhooks and records a change request for
// every pull request opened, reopened or updated.
//
// The signature (X-Hub-Signature-256, HMAC-SHA256 of the raw body) is
// checked in constant time before the body is parsed; there is no SHA-1
// fallback and no unsigned mode: the stage refuses to start without a
// secret. A delivery is acknowledged only once its fact is durably in the
// event log. A change (repository, head, base) is recorded once: GitHub's
// redeliveries, even days later, find it already known.
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
}

// Handler is the webhook HTTP handler.
type Handler struct {
	log    *eventlog.Log
	logger zerolog.Logger
	secret []byte
}

// NewHandler returns the handler, or ErrNoSecret.
func NewHandler(cfg Config) (*Handler, error) {
	if len(cfg.Secret) == 0 {
		return nil, ErrNoSecret
	}
	return &Handler{log: cfg.Log, logger: cfg.Logger, secret: cfg.Secret}, nil
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
	return Serve(ctx, ln, h)
}

// Serve serves h on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
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
	id := eventlog.ChangeID(req.GetRepoUrl(), req.GetHeadCommit(), req.GetBaseCommit())
	ev := &eventsv1.Event{Id: "gh-" + delivery, CorrelationId: id, Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: req}}
	if delivery == "" {
		ev.Id = "gh-" + id
	}
	_, err = h.log.Append(r.Context(), id, ev, eventlog.ExpectLast(0))
	switch {
	case errors.Is(err, eventlog.ErrConflict):
		log.Info().Str("change", id).Msg("change already known")
	case err != nil:
		log.Error().Err(err).Msg("could not record the change; GitHub will see a 503 and may redeliver")
		http.Error(w, "could not record the change", http.StatusServiceUnavailable)
		return
	default:
		log.Info().Str("change", id).Str("repo", req.GetRepoName()).Str("head", req.GetHeadCommit()).Msg("change requested")
	}
	w.WriteHeader(http.StatusAccepted)
}
