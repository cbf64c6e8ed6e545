package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DeliveriesBucket is the KV bucket of handled deliveries.
const DeliveriesBucket = "ekaci_github_deliveries"

// DefaultDeliveryTTL is how long a handled delivery is remembered: GitHub
// lets a person redeliver deliveries of the past 3 days.
const DefaultDeliveryTTL = 7 * 24 * time.Hour

// Deliveries is the persisted table of handled deliveries
// (X-GitHub-Delivery): a redelivery, however late within its TTL, gets the
// first answer again and does nothing. A delivery is written only once
// handled, so a crash before that lets the redelivery do the work, whose
// appends are guarded or de-duplicated.
type Deliveries struct{ kv jetstream.KeyValue }

// Outcome is what a delivery's handling answered.
type Outcome struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// OpenDeliveries creates or opens the table.
func OpenDeliveries(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (*Deliveries, error) {
	if ttl <= 0 {
		ttl = DefaultDeliveryTTL
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DeliveriesBucket, History: 1, TTL: ttl,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
		Description: "GitHub webhook deliveries already handled (X-GitHub-Delivery -> answer)"})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", DeliveriesBucket, err)
	}
	return &Deliveries{kv: kv}, nil
}

var keyRE = regexp.MustCompile(`^[-_A-Za-z0-9]{1,128}$`)

// key is the delivery id when it is a safe KV key (GitHub's are GUIDs),
// else a digest of it.
func key(delivery string) string {
	if keyRE.MatchString(delivery) {
		return delivery
	}
	sum := sha256.Sum256([]byte(delivery))
	return "sha256-" + hex.EncodeToString(sum[:16])
}

// Get returns the outcome of a delivery already handled.
func (d *Deliveries) Get(ctx context.Context, delivery string) (Outcome, bool, error) {
	e, err := d.kv.Get(ctx, key(delivery))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, fmt.Errorf("read delivery %s: %w", delivery, err)
	}
	var o Outcome
	if err := json.Unmarshal(e.Value(), &o); err != nil {
		return Outcome{}, false, fmt.Errorf("delivery %s: %w", delivery, err)
	}
	return o, true, nil
}

// Put records a delivery's outcome (the first one recorded stays).
func (d *Deliveries) Put(ctx context.Context, delivery string, o Outcome) error {
	b, _ := json.Marshal(o)
	_, err := d.kv.Create(ctx, key(delivery), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record delivery %s: %w", delivery, err)
	}
	return nil
}
