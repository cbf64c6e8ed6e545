// Package projectiontest gives tests of read models a bbolt file that is
// checked when the test ends: OpenDB opens it as production does
// (projection.Open) and, at cleanup, closes it and runs bbolt's
// consistency check (tx.Check) on what is on disk, failing the test on any
// corruption. A test cannot forget the check, nor pass on a file the code
// under test left broken.
package projectiontest

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/projection"
)

// OpenDB opens the read model file name: a bare name is a new file in a
// directory of the test's own (tb.TempDir()); an absolute path opens that
// file, for a test that reopens one it made (db.Path()) to restart a model
// on it. At cleanup the handle is closed (a test may close it earlier, to
// reopen the file) and the file is reopened read-only and checked; every
// problem bbolt finds is reported with tb.Errorf. A file another handle
// still holds at cleanup cannot be checked and fails the test too.
func OpenDB(tb testing.TB, name string) *bolt.DB {
	tb.Helper()
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(tb.TempDir(), name)
	}
	db, err := projection.Open(path)
	if err != nil {
		tb.Fatalf("projectiontest: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("projectiontest: close %s: %v", path, err)
		}
		Check(tb, path)
	})
	return db
}

// Check runs bbolt's consistency check on the closed file at path and
// reports every problem with tb.Errorf.
func Check(tb testing.TB, path string) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: projection.LockTimeout})
	if err != nil {
		tb.Errorf("projectiontest: open %s to check it: %v (is it still open?)", path, err)
		return
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			tb.Errorf("projectiontest: bbolt check %s: %v", path, err)
		}
		return nil
	}); err != nil {
		tb.Errorf("projectiontest: check %s: %v", path, err)
	}
}
