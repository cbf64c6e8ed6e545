package projectiontest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// recorder is a testing.TB that keeps what Errorf reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// fill writes enough rows to spread over several pages and closes db.
func fill(t *testing.T, db *bolt.DB) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("rows"))
		if err != nil {
			return err
		}
		for i := range 2000 {
			if err := b.Put(fmt.Appendf(nil, "key-%05d", i), []byte(strings.Repeat("v", 40))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenDBChecksAtCleanup: the file a test leaves behind is checked
// once the test ends, and corruption is reported.
func TestOpenDBChecksAtCleanup(t *testing.T) {
	tests := []struct {
		name    string
		corrupt bool
		wantErr bool
	}{
		{"a sound file passes", false, false},
		{"a corrupted page is reported", true, true},
	}
	for _, tt := range tests {
		rec := &recorder{}
		t.Run(tt.name, func(t *testing.T) {
			rec.TB = t
			db := projectiontest.OpenDB(rec, "m.db")
			path := db.Path()
			if !filepath.IsAbs(path) || !strings.HasPrefix(path, os.TempDir()) {
				t.Fatalf("OpenDB(%q) opened %s, want a file under the test's temp dir", "m.db", path)
			}
			fill(t, db)
			if tt.corrupt {
				// The rows' tree starts at page 3: scribble over the
				// header of one of its pages.
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte(strings.Repeat("\xff", 64)), int64(5*os.Getpagesize())); err != nil {
					t.Fatal(err)
				}
			}
		})
		// The subtest's cleanups, OpenDB's check among them, have run.
		if got := len(rec.errs) > 0; got != tt.wantErr {
			t.Errorf("%s: cleanup reported %q, want errors: %v", tt.name, rec.errs, tt.wantErr)
		}
	}
}

// TestOpenDBReopens: an absolute path reopens the file a test made, so a
// model can be restarted on it.
func TestOpenDBReopens(t *testing.T) {
	db := projectiontest.OpenDB(t, "m.db")
	path := db.Path()
	fill(t, db)
	again := projectiontest.OpenDB(t, path)
	if err := again.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("rows")) == nil {
			return fmt.Errorf("no rows bucket in the reopened %s", path)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
