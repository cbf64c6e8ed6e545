package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	"github.com/ekaci/ekaci/services/webhook"
)

const secret = "s3cret"

func sign(body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

const prBody = `{"action":"synchronize","number":7,
 "pull_request":{"head":{"sha":"1111111111111111111111111111111111111111"},"base":{"sha":"2222222222222222222222222222222222222222"}},
 "repository":{"full_name":"octo/repo","clone_url":"https://github.com/octo/repo.git"}}`

var (
	badHead = []byte(strings.Replace(prBody, "1111111111111111111111111111111111111111", "../../../../victim", 1))
	badBase = []byte(strings.Replace(prBody, "2222222222222222222222222222222222222222", "main", 1))
)

func TestWebhook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	if _, err := webhook.NewHandler(webhook.Config{Events: log}); !errors.Is(err, webhook.ErrNoSecret) {
		t.Fatalf("no secret: err = %v, want ErrNoSecret", err)
	}
	h, err := webhook.NewHandler(webhook.Config{Events: log, Logger: zerolog.Nop(), Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- webhook.Serve(sctx, ln, h, webhook.Timeouts{}) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/webhook"
	post := func(event, delivery, sig string, body []byte) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", delivery)
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	body := []byte(prBody)
	tests := []struct {
		name, event, delivery, sig string
		body                       []byte
		want                       int
	}{
		{"unsigned", "pull_request", "d0", "", body, http.StatusUnauthorized},
		{"wrong signature", "pull_request", "d1", sign([]byte("other")), body, http.StatusUnauthorized},
		{"sha1 signature only", "pull_request", "d2", "sha1=abc", body, http.StatusUnauthorized},
		{"ping", "ping", "d3", sign([]byte(`{"zen":"x"}`)), []byte(`{"zen":"x"}`), http.StatusOK},
		{"pull request", "pull_request", "d4", sign(body), body, http.StatusAccepted},
		{"redelivered later", "pull_request", "d5", sign(body), body, http.StatusAccepted},
		{"malformed json", "pull_request", "d6", sign([]byte("{")), []byte("{"), http.StatusBadRequest},
		{"head is not a commit id", "pull_request", "d7", sign(badHead), badHead, http.StatusBadRequest},
		{"base is not a commit id", "pull_request", "d8", sign(badBase), badBase, http.StatusBadRequest},
	}
	for _, tt := range tests {
		if got := post(tt.event, tt.delivery, tt.sig, tt.body); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	id := eventlog.ChangeID("https://github.com/octo/repo.git", "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222")
	recs, _, err := log.Load(ctx, eventlog.Change, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("change has %d requests recorded, want exactly 1", len(recs))
	}
	cr := recs[0].Event.GetChangeRequested()
	if cr.GetRepoName() != "octo/repo" || cr.GetSource() != "webhook" || recs[0].Event.GetId() != "gh-d4" {
		t.Fatalf("recorded %+v (event %s)", cr, recs[0].Event.GetId())
	}
}
