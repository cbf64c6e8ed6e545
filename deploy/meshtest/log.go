package meshtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
)

// Deliver posts a signed pull_request "opened" delivery for (repoURL,
// head, base) to the webhook at addr, as GitHub would, and returns the id
// of the change it requests.
func Deliver(addr, secret, repoURL, repoName, head, base string) (string, error) {
	body, err := json.Marshal(map[string]any{
		"action": "opened", "number": 1,
		"pull_request": map[string]any{"number": 1, "head": map[string]any{"sha": head}, "base": map[string]any{"sha": base}},
		"repository":   map[string]any{"full_name": repoName, "clone_url": repoURL},
	})
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "pull_request")
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("mesh-%d", time.Now().UnixNano()))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("deliver to the webhook: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("webhook answered %s: %s", resp.Status, msg)
	}
	return eventlog.ChangeID(repoURL, head, base), nil
}

// Dial connects to the mesh's NATS through the published ports, and
// through the servers' own addresses they tell it (the host reaches the
// mesh's network): a node killed and started again is published on
// another port.
func Dial(urls []string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("meshtest"),
		nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond), nats.PingInterval(3*time.Second), nats.MaxPingsOutstanding(2))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// retry calls f until it succeeds or within passes (a leader moving makes
// the JetStream API answer nothing for seconds).
func retry(ctx context.Context, within time.Duration, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(within)
	for {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := f(actx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Second)
	}
}

// LastSeq is EKACI_EVENTS's last sequence.
func LastSeq(ctx context.Context, log *eventlog.Log) (uint64, error) {
	var seq uint64
	err := retry(ctx, 2*time.Minute, func(ctx context.Context) error {
		var err error
		seq, err = log.LastSeq(ctx)
		return err
	})
	return seq, err
}

// DrvHistory is what the log says of one derivation.
type DrvHistory struct {
	Final     buildstate.State
	Completed int    // facts that made it succeeded or failed
	Illegal   string // the first fact the state machine refuses, if any
}

// Histories folds, for every derivation discovered after seq, its facts
// through the state machine (each derivation a downstream_failed lists
// included): a second terminal fact is refused by it, or counted.
func Histories(ctx context.Context, log *eventlog.Log, after uint64) (map[string]*DrvHistory, error) {
	var got map[string]*DrvHistory
	err := retry(ctx, 2*time.Minute, func(ctx context.Context) error {
		got = map[string]*DrvHistory{}
		state := map[string]buildstate.Drv{}
		return log.Read(ctx, after, []string{eventlog.KindFilter(eventlog.Drv)}, func(r eventlog.Record) error {
			for t := range r.Transitions() {
				h := got[t.ID]
				if h == nil {
					if t.Fact != string(buildstate.KindDiscovered) {
						continue // discovered before this run
					}
					h = &DrvHistory{}
					got[t.ID] = h
				}
				next, err := buildstate.Next(state[t.ID], t.Event)
				if err != nil {
					if h.Illegal == "" {
						h.Illegal = fmt.Sprintf("%s at %d: %v", t.Fact, t.Seq, err)
					}
					continue
				}
				if next.State.Completed() && !state[t.ID].State.Completed() {
					h.Completed++
				}
				state[t.ID] = next
				h.Final = next.State
			}
			return nil
		})
	})
	return got, err
}

// Pending lists every durable consumer with messages not yet delivered or
// not yet acknowledged, as "stream/consumer pending N ack-pending M".
func Pending(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	var bad []string
	err := retry(ctx, time.Minute, func(ctx context.Context) error {
		bad = nil
		names := js.StreamNames(ctx)
		var streams []string
		for n := range names.Name() {
			streams = append(streams, n)
		}
		if err := names.Err(); err != nil {
			return err
		}
		for _, sn := range streams {
			st, err := js.Stream(ctx, sn)
			if err != nil {
				return err
			}
			cl := st.ListConsumers(ctx)
			for ci := range cl.Info() {
				if ci.Config.Durable == "" {
					continue // ephemeral: a reader's, like this test's own
				}
				if ci.NumPending > 0 || ci.NumAckPending > 0 {
					bad = append(bad, fmt.Sprintf("%s/%s pending %d ack-pending %d", sn, ci.Name, ci.NumPending, ci.NumAckPending))
				}
			}
			if err := cl.Err(); err != nil {
				return err
			}
		}
		sort.Strings(bad)
		return nil
	})
	return bad, err
}

// ErrReplicas means a stream's replicas are not all current.
var ErrReplicas = errors.New("replicas not current")

// Replicated checks that every stream has its leader and len(peers)
// current replicas.
func Replicated(ctx context.Context, js jetstream.JetStream, replicas int) error {
	return retry(ctx, 2*time.Minute, func(ctx context.Context) error {
		for _, name := range []string{eventlog.EventsStream, eventlog.WorkStream} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return err
			}
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			c := info.Cluster
			if c == nil || c.Leader == "" || len(c.Replicas) != replicas-1 {
				return fmt.Errorf("%w: %s: cluster %+v", ErrReplicas, name, c)
			}
			for _, r := range c.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("%w: %s: replica %s current=%v offline=%v", ErrReplicas, name, r.Name, r.Current, r.Offline)
				}
			}
		}
		return nil
	})
}

// Leader is the server leading stream's Raft group ("nats-2").
func Leader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	var leader string
	err := retry(ctx, time.Minute, func(ctx context.Context) error {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("stream %s has no leader", stream)
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader, err
}
