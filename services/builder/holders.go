package builder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// HoldersBucket is the JetStream key-value bucket of builder heartbeats:
// one key per holder (one life of one builder process), put every
// lease/6. A holder is alive while its last heartbeat is younger than
// half its lease, suspect until the lease has passed, and gone after that
// or once its key is deleted (a clean stop, or its next life, which knows
// the previous one is dead because it holds the state dir's lock).
//
// Why a bucket and not the request's own ack heartbeats: a work-queue
// message has one ack state, shared by every copy and redelivery, and
// says nothing about who holds it; a key per holder lets any builder ask
// "is the process that started this attempt still there?".
const HoldersBucket = "ekaci_holders"

// DefaultLease is how long after its last heartbeat a holder counts as gone.
const DefaultLease = 30 * time.Second

// holderCleanup is the bucket's max age: keys of holders that died without
// deleting theirs are removed after it (liveness is read from each key's
// time, not from its presence, so this only keeps the bucket small).
const holderCleanup = time.Hour

type liveness int

const (
	gone    liveness = iota // no heartbeat within the lease: report the attempt's death
	suspect                 // late, not yet past the lease: ask again later
	alive                   // fresh: the attempt is in good hands
)

type holders struct {
	kv    jetstream.KeyValue
	id    string
	lease time.Duration
	log   zerolog.Logger

	mu    sync.Mutex
	hb    heartbeat  // the heartbeat's content
	putMu sync.Mutex // heartbeats land in the order their content changed
}

// heartbeat is a holder key's value; the admin API shows it
// (services/admin ListBuilders reads these fields).
type heartbeat struct {
	Builder string    `json:"builder"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Since   time.Time `json:"since"`
	// Slots is how many builds the process runs at once (its pools' max
	// jobs).
	Slots int `json:"slots"`
	// Drained says the process has seen its name drained and takes no
	// new work.
	Drained bool `json:"drained"`
}

func (h *holders) value() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, _ := json.Marshal(h.hb)
	return v
}

// setDrained puts a heartbeat saying whether the process is drained at
// once, so that whoever drained it can tell it took notice.
func (h *holders) setDrained(ctx context.Context, drained bool) {
	h.mu.Lock()
	h.hb.Drained = drained
	h.mu.Unlock()
	if err := h.put(ctx); err != nil && ctx.Err() == nil {
		h.log.Warn().Err(err).Str("holder", h.id).Msg("heartbeat not recorded after a drain change; the next one says it")
	}
}

// put puts the heartbeat as it is now.
func (h *holders) put(ctx context.Context) error {
	h.putMu.Lock()
	defer h.putMu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, h.lease/3)
	defer cancel()
	_, err := h.kv.Put(pctx, h.id, h.value())
	return err
}

var notKeyChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// newHolderID names one life of a builder: its name (made key-safe) and
// random bits.
func newHolderID(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	n := notKeyChars.ReplaceAllString(name, "_")
	if len(n) > 40 {
		n = n[:40]
	}
	if n == "" {
		n = "builder"
	}
	return n + "-" + hex.EncodeToString(b[:])
}

// openHolders provisions the bucket (with the event stream's replicas) and
// puts the first heartbeat.
func openHolders(ctx context.Context, js jetstream.JetStream, id, name string, slots int, lease time.Duration, log zerolog.Logger) (*holders, error) {
	replicas := 1
	if s, err := js.Stream(ctx, eventlog.EventsStream); err == nil {
		replicas = max(1, s.CachedInfo().Config.Replicas)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, holdersConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("holders bucket %s: %w", HoldersBucket, err)
	}
	host, _ := os.Hostname()
	h := &holders{kv: kv, id: id, lease: lease, log: log, hb: heartbeat{Builder: name, Host: host, PID: os.Getpid(), Since: time.Now().UTC(), Slots: slots}}
	if _, err := kv.Put(ctx, id, h.value()); err != nil {
		return nil, fmt.Errorf("first heartbeat of %s: %w", id, err)
	}
	return h, nil
}

func holdersConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      HoldersBucket,
		Description: "ekaci builder heartbeats: one key per builder process life",
		TTL:         holderCleanup,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// beat keeps the heartbeat fresh until ctx ends, then deletes the key: a
// holder that stops cleanly has reported every attempt it held.
func (h *holders) beat(ctx context.Context) {
	t := time.NewTicker(h.lease / 6)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = h.kv.Delete(dctx, h.id)
			cancel()
			return
		case <-t.C:
			if err := h.put(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn().Err(err).Str("holder", h.id).Msg("heartbeat not recorded; other builders may take this builder's attempts for dead after the lease")
			}
		}
	}
}

// forget deletes the key of a holder known to be dead (a previous life of
// this builder).
func (h *holders) forget(ctx context.Context, id string) {
	if id == "" || id == h.id {
		return
	}
	if err := h.kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		h.log.Warn().Err(err).Str("holder", id).Msg("could not clear the heartbeat of this builder's previous life")
	}
}

// check says whether holder is alive, given the lease it announced; when
// suspect, wait is how long until the lease has passed.
func (h *holders) check(ctx context.Context, holder string, lease time.Duration) (l liveness, wait time.Duration, err error) {
	if holder == "" || lease <= 0 {
		return gone, 0, nil // an attempt started before holders existed
	}
	e, err := h.kv.Get(ctx, holder)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return gone, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("heartbeat of %s: %w", holder, err)
	}
	if e.Operation() != jetstream.KeyValuePut {
		return gone, 0, nil
	}
	// The key's time is the server's; our clock may differ from it by a
	// little, which the lease (tens of seconds) absorbs.
	age := time.Since(e.Created())
	switch {
	case age < lease/2:
		return alive, 0, nil
	case age < lease:
		return suspect, lease - age, nil
	}
	return gone, 0, nil
}
