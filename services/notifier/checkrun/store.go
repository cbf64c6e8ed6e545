package checkrun

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The read model (notifier-github.db): what the notifier knows of each
// change and jobset it reports on, and the id of every check run it
// created, so a redelivered or replayed fact, or a restarted notifier,
// updates the run it made instead of creating a second one.
var (
	changesBucket = []byte("changes")
	jobsetsBucket = []byte("jobsets")
	runsBucket    = []byte("runs")
)

// change is a change that came from GitHub.
type change struct {
	Installation int64  `json:"installation"`
	Owner        string `json:"owner"`
	Repo         string `json:"repo"`
	Head         string `json:"head"`
	Base         string `json:"base,omitempty"`
	PullRequest  int64  `json:"pr,omitempty"`
}

// jobset ties a jobset to its change and job.
type jobset struct {
	Change string `json:"change"`
	Job    string `json:"job"`
	// Cancelled says who cancelled it and why, for its conclusion.
	Cancelled string `json:"cancelled,omitempty"`
}

// run is a check run the notifier created.
type run struct {
	ID        int64  `json:"id"`
	Completed bool   `json:"completed,omitempty"`
	Digest    string `json:"digest,omitempty"` // of the last body sent, to skip repeats
	// Progress is when the progress summary was last sent.
	Progress time.Time `json:"progress,omitempty"`
}

type store struct{ db *bolt.DB }

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open notifier read model %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{changesBucket, jobsetsBucket, runsBucket, watchBucket, attrsBucket, stateBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("notifier read model %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) Close() error { return s.db.Close() }

func (s *store) get(bucket []byte, key string, v any) (bool, error) {
	var raw []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucket).Get([]byte(key)); b != nil {
			raw = append([]byte(nil), b...)
		}
		return nil
	})
	if err != nil || raw == nil {
		return false, err
	}
	return true, json.Unmarshal(raw, v)
}

func (s *store) put(bucket []byte, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(key), raw) })
}

// runKey names a check run: its change and its name.
func runKey(changeID, name string) string { return changeID + "\x00" + name }
