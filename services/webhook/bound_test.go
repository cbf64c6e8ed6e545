package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/services/gitter/request"
	"github.com/ekaci/ekaci/services/webhook"
)

// serve starts the webhook on a free port and returns its URL.
func serve(t *testing.T, ctx context.Context, cfg webhook.Config) string {
	t.Helper()
	h, err := webhook.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- webhook.Serve(sctx, ln, h, cfg.Timeouts) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String() + "/webhook"
}

func post(t *testing.T, ctx context.Context, url, delivery string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "pull_request")
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", sign(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSlowClientsAreBounded is finding 13 of the core review for the
// webhook: unauthenticated clients that send their body slowly held a
// request each, with no bound on how many nor on how long.
func TestSlowClientsAreBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	const bound = 2
	url := serve(t, ctx, webhook.Config{Events: log, Logger: zerolog.Nop(), Secret: []byte(secret),
		MaxInFlight: bound, Timeouts: webhook.Timeouts{Read: 3 * time.Second}})
	addr := url[len("http://") : len(url)-len("/webhook")]

	// Twice the bound of clients that promise a body and send one byte.
	for i := range 2 * bound {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: slow-%d\r\nContent-Length: 1000000\r\n\r\n{", i)
	}
	// Let the server start handling them (each takes a slot, then waits
	// for its body).
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	if code := post(t, ctx, url, "over", []byte(prBody)); code != http.StatusServiceUnavailable {
		t.Fatalf("a request over the bound got %d, want 503", code)
	}
	took := time.Since(start)
	t.Logf("503 over the bound after %v", took)
	if took > 2*time.Second {
		t.Fatalf("the request over the bound waited %v for its 503", took)
	}
	// The read timeout ends the slow requests, and their slots are free
	// again: a real delivery gets through.
	natstest.Eventually(t, 20*time.Second, func() bool {
		return post(t, ctx, url, "after", []byte(prBody)) == http.StatusAccepted
	}, "a delivery is accepted once the slow clients timed out")
}

// TestRedeliveryAfterCheckoutFailure: a change whose checkout failed could
// never be run again (its id is deterministic and the webhook only joined
// it); a redelivery now requests its next attempt, once.
func TestRedeliveryAfterCheckoutFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	url := serve(t, ctx, webhook.Config{Events: log, Logger: zerolog.Nop(), Secret: []byte(secret)})
	req := &eventsv1.ChangeRequested{RepoUrl: "https://github.com/octo/repo.git",
		HeadCommit: "1111111111111111111111111111111111111111", BaseCommit: "2222222222222222222222222222222222222222"}
	first, second := request.AttemptID(req, 0), request.AttemptID(req, 1)
	count := func(id string) int {
		recs, _, err := log.Load(ctx, eventlog.Change, id)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}
	if code := post(t, ctx, url, "d1", []byte(prBody)); code != http.StatusAccepted {
		t.Fatalf("first delivery: %d", code)
	}
	if code := post(t, ctx, url, "d1", []byte(prBody)); code != http.StatusAccepted || count(first) != 1 {
		t.Fatalf("redelivery while under way: %d, %d facts", code, count(first))
	}
	// The checkout fails and the change concludes.
	for _, ev := range []*eventsv1.Event{
		{Id: "checkout-failed", Payload: &eventsv1.Event_ChangeCheckoutFailed{ChangeCheckoutFailed: &eventsv1.ChangeCheckoutFailed{Error: "could not resolve host"}}},
		{Id: "concluded", Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE}}},
	} {
		if _, err := log.Append(ctx, first, ev); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if code := post(t, ctx, url, "d1", []byte(prBody)); code != http.StatusAccepted {
			t.Fatalf("redelivery after the failure: %d", code)
		}
	}
	if count(first) != 3 || count(second) != 1 {
		t.Fatalf("first attempt has %d facts (want 3), second %d (want 1 request)", count(first), count(second))
	}
	recs, _, _ := log.Load(ctx, eventlog.Change, second)
	if recs[0].Event.GetId() != "gh-d1-attempt-1" || recs[0].Event.GetChangeRequested().GetHeadCommit() != req.GetHeadCommit() {
		t.Fatalf("second attempt recorded as %v", recs[0].Event)
	}
}
