package projection

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// LockTimeout bounds how long Open waits for another process's lock.
const LockTimeout = 2 * time.Second

// Open opens (creating if needed) the bbolt file at path. It never waits
// forever: when another process holds the file it returns ErrLocked.
func Open(path string) (*bolt.DB, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("open read model %q: path must be absolute (read models live under the data dir)", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open read model %q: %w", path, err)
	}
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: LockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open read model %q: %w (is another ekaci running on this data dir?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open read model %q: %w", path, err)
	}
	return db, nil
}
