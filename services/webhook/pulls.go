package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PullsBucket indexes what the webhook requested per pull request and per
// head commit: what a newer push supersedes, what a closed pull request
// cancels, what a re-run restarts.
const PullsBucket = "ekaci_github_pulls"

// pullHead is one head of a pull request that the webhook handled.
type pullHead struct {
	Head   string `json:"head"`
	Before string `json:"before,omitempty"` // the head it replaced (synchronize)
	Change string `json:"change,omitempty"` // the change requested for it
}

type pullEntry struct {
	Heads []pullHead `json:"heads"`
}

// headEntry lists the changes requested for one head commit.
type headEntry struct {
	Changes []string `json:"changes"`
}

// Pulls is the index (a KV bucket; entries live as long as deliveries).
type Pulls struct{ kv jetstream.KeyValue }

// OpenPulls creates or opens the index.
func OpenPulls(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (*Pulls, error) {
	if ttl <= 0 {
		ttl = 30 * 24 * time.Hour
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: PullsBucket, History: 1, TTL: ttl,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
		Description: "GitHub pull requests' heads and the changes requested for them"})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", PullsBucket, err)
	}
	return &Pulls{kv: kv}, nil
}

func digestKey(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return prefix + hex.EncodeToString(h.Sum(nil))[:40]
}

func pullKey(repo string, number int64) string {
	return digestKey("pr-", repo, fmt.Sprint(number))
}

func headKey(repo, head string) string { return digestKey("head-", repo, head) }

// update reads key into v, applies f, and writes it back, retrying on a
// concurrent write.
func (p *Pulls) update(ctx context.Context, key string, v any, f func() bool) error {
	for try := 0; try < 10; try++ {
		e, err := p.kv.Get(ctx, key)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read %s: %w", key, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), v); err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
		}
		if !f() {
			return nil
		}
		b, _ := json.Marshal(v)
		if rev == 0 {
			_, err = p.kv.Create(ctx, key, b)
		} else {
			_, err = p.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return fmt.Errorf("write %s: %w", key, err)
		}
	}
	return fmt.Errorf("write %s: too many concurrent writers", key)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// get reads a key; a missing one leaves v as it is.
func (p *Pulls) get(ctx context.Context, key string, v any) error {
	e, err := p.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	return json.Unmarshal(e.Value(), v)
}

// addHead records a head of a pull request (before: the head it replaced,
// "" when not known) and returns the entry as it stands.
func (p *Pulls) addHead(ctx context.Context, repo string, number int64, h pullHead) (pullEntry, error) {
	var e pullEntry
	err := p.update(ctx, pullKey(repo, number), &e, func() bool {
		for i, x := range e.Heads {
			if x.Head == h.Head {
				changed := false
				if x.Change == "" && h.Change != "" {
					e.Heads[i].Change, changed = h.Change, true
				}
				if x.Before == "" && h.Before != "" {
					e.Heads[i].Before, changed = h.Before, true
				}
				return changed
			}
		}
		e.Heads = append(e.Heads, h)
		return true
	})
	return e, err
}

// heads returns a pull request's entry.
func (p *Pulls) heads(ctx context.Context, repo string, number int64) (pullEntry, error) {
	var e pullEntry
	return e, p.get(ctx, pullKey(repo, number), &e)
}

// addChange records a change requested for a head commit.
func (p *Pulls) addChange(ctx context.Context, repo, head, change string) error {
	var e headEntry
	return p.update(ctx, headKey(repo, head), &e, func() bool {
		for _, c := range e.Changes {
			if c == change {
				return false
			}
		}
		e.Changes = append(e.Changes, change)
		return true
	})
}

// changes lists the changes requested for a head commit.
func (p *Pulls) changes(ctx context.Context, repo, head string) ([]string, error) {
	var e headEntry
	return e.Changes, p.get(ctx, headKey(repo, head), &e)
}

// tip is the newest head of a pull request: the one no other head
// replaced (synchronize's before/after chain), and among several such
// (a chain with a gap), the one recorded last.
func (e pullEntry) tip() string {
	replaced := map[string]bool{}
	for _, h := range e.Heads {
		if h.Before != "" {
			replaced[h.Before] = true
		}
	}
	tip := ""
	for _, h := range e.Heads {
		if !replaced[h.Head] {
			tip = h.Head
		}
	}
	return tip
}
