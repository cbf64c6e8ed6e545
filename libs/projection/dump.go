package projection

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Dump reads every row of the read model file at path — each bucket but
// the runner's own bookkeeping (names starting with '_': position, mark,
// version) — keyed "<bucket>/<key>". Rebuild tests compare a live model
// with one rebuilt from the log through it. The file is opened read-only.
func Dump(path string) (map[string][]byte, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", path, err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if name[0] == '_' {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = append([]byte(nil), v...)
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", path, err)
	}
	return out, nil
}
