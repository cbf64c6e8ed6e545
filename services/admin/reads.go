package admin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/buildstate"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Errors of the reads, mapped to status codes by the server.
var (
	// ErrNotFound: the model knows nothing by that id.
	ErrNotFound = errors.New("not found")
	// ErrBadArgument: a request field is malformed (the error names it).
	ErrBadArgument = errors.New("invalid argument")
)

// fieldError is a malformed request field.
type fieldError struct {
	field, why string
}

func (e *fieldError) Error() string { return fmt.Sprintf("%s: %s", e.field, e.why) }
func (e *fieldError) Unwrap() error { return ErrBadArgument }

// Reads answers the API's reads from the model's file.
type Reads struct {
	mu sync.RWMutex // held for reading by each read, for writing by a swap
	db *bolt.DB
}

// NewReads reads from db, a file Model folds into.
func NewReads(db *bolt.DB) *Reads { return &Reads{db: db} }

// view runs fn in a read transaction of the current file.
func (r *Reads) view(fn func(*bolt.Tx) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.db.View(fn)
}

// swap makes reads answer from db once the reads under way have ended,
// and returns the file they answered from.
func (r *Reads) swap(db *bolt.DB) *bolt.DB {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.db
	r.db = db
	return old
}

// Result states besides the build states.
const (
	stateEvalError = "eval-error"
	stateRemoved   = "removed"
)

// ListChanges pages changes, newest first; the page token is the
// requested sequence of the last change returned.
func (r *Reads) ListChanges(req *adminv1.ListChangesRequest) (*adminv1.ListChangesResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = 50
	case size > 1000:
		return nil, &fieldError{"page_size", fmt.Sprintf("%d: at most 1000", size)}
	}
	var before uint64
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.ParseUint(t, 10, 64)
		if err != nil || n == 0 {
			return nil, &fieldError{"page_token", fmt.Sprintf("%q: not a token this server gave", t)}
		}
		before = n
	}
	out := &adminv1.ListChangesResponse{}
	err := r.view(func(tx *bolt.Tx) error {
		cur := tx.Bucket(orderBucket).Cursor()
		var k, v []byte
		var last uint64 // the order key of the last change listed
		if before == 0 {
			k, v = cur.Last()
		} else {
			cur.Seek(seqBytes(before))
			k, v = cur.Prev()
		}
		for ; k != nil; k, v = cur.Prev() {
			c := &adminv1.Change{}
			if _, err := getProto(tx, changesBucket, string(v), c); err != nil {
				return err
			}
			if s := req.GetState(); s != "" && c.GetState() != s {
				continue
			}
			if repo := req.GetRepo(); repo != "" && !strings.Contains(c.GetRepoUrl(), repo) && !strings.Contains(c.GetRepoName(), repo) {
				continue
			}
			if len(out.Changes) == size {
				out.NextPageToken = strconv.FormatUint(last, 10)
				return nil
			}
			out.Changes = append(out.Changes, c)
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return out, err
}

// GetChange returns a change and its jobsets.
func (r *Reads) GetChange(id string) (*adminv1.GetChangeResponse, error) {
	if id == "" {
		return nil, &fieldError{"id", "empty"}
	}
	out := &adminv1.GetChangeResponse{Change: &adminv1.Change{}}
	err := r.view(func(tx *bolt.Tx) error {
		found, err := getProto(tx, changesBucket, id, out.Change)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("change %s: %w", id, ErrNotFound)
		}
		for _, jid := range out.Change.GetJobsetIds() {
			js, _, err := jobsetWithAttrs(tx, jid, "")
			if errors.Is(err, ErrNotFound) {
				continue // named by the configuration, not created
			}
			if err != nil {
				return err
			}
			out.Jobsets = append(out.Jobsets, js)
		}
		return nil
	})
	return out, err
}

// GetJobset returns a jobset and its attributes in the given state (all
// for "").
func (r *Reads) GetJobset(id, state string) (*adminv1.GetJobsetResponse, error) {
	if id == "" {
		return nil, &fieldError{"id", "empty"}
	}
	if state != "" && state != stateEvalError && state != stateRemoved {
		if _, err := buildstate.ParseState(state); err != nil {
			return nil, &fieldError{"state", fmt.Sprintf("%q: want a build state (succeeded, failed, ...), eval-error or removed", state)}
		}
	}
	out := &adminv1.GetJobsetResponse{}
	err := r.view(func(tx *bolt.Tx) error {
		js, attrs, err := jobsetWithAttrs(tx, id, state)
		out.Jobset, out.Attrs = js, attrs
		return err
	})
	return out, err
}

// jobsetWithAttrs reads a jobset and its attributes (state-filtered), and
// counts its attributes per state while it has not concluded.
func jobsetWithAttrs(tx *bolt.Tx, id, state string) (*adminv1.Jobset, []*adminv1.Attr, error) {
	js := &adminv1.Jobset{}
	found, err := getProto(tx, jobsetsBucket, id, js)
	if err != nil {
		return nil, nil, err
	}
	if !found {
		return nil, nil, fmt.Errorf("jobset %s: %w", id, ErrNotFound)
	}
	counts := map[string]uint32{}
	var attrs []*adminv1.Attr
	prefix := append([]byte(id), 0)
	cur := tx.Bucket(attrsBucket).Cursor()
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		ja := &eventsv1.JobAttr{}
		if err := proto.Unmarshal(v, ja); err != nil {
			return nil, nil, fmt.Errorf("decode attribute of %s: %w", id, err)
		}
		a, err := attrOf(tx, ja)
		if err != nil {
			return nil, nil, err
		}
		counts[a.GetState()]++
		if state == "" || a.GetState() == state {
			attrs = append(attrs, a)
		}
	}
	slices.SortFunc(attrs, func(a, b *adminv1.Attr) int { return strings.Compare(a.GetAttr(), b.GetAttr()) })
	if js.GetState() != "concluded" {
		js.Counts = counts
	}
	return js, attrs, nil
}

func attrOf(tx *bolt.Tx, ja *eventsv1.JobAttr) (*adminv1.Attr, error) {
	a := &adminv1.Attr{Attr: ja.GetAttr(), DrvId: ja.GetDrvId(), DrvPath: ja.GetDrvPath(), Difference: ja.GetDifference(), Error: ja.GetEvalError(), State: stateEvalError}
	if ja.GetDifference() == eventsv1.Difference_DIFFERENCE_REMOVED {
		a.State = stateRemoved
		return a, nil
	}
	if ja.GetDrvId() == "" {
		return a, nil
	}
	_, d, err := getDrv(tx, ja.GetDrvId())
	if err != nil {
		return nil, err
	}
	if d == nil {
		a.State = buildstate.None.String()
		return a, nil
	}
	a.State, a.Error, a.CauseDrvId = d.GetState(), d.GetDetail(), d.GetCauseDrvId()
	return a, nil
}

// drvID accepts a derivation id or its .drv store path.
func drvID(tx *bolt.Tx, idOrPath string) (string, error) {
	if idOrPath == "" {
		return "", &fieldError{"id", "empty: want a derivation id or a .drv path"}
	}
	if strings.HasPrefix(idOrPath, "/") {
		id := tx.Bucket(pathsBucket).Get([]byte(idOrPath))
		if id == nil {
			return "", fmt.Errorf("derivation %s: %w", idOrPath, ErrNotFound)
		}
		return string(id), nil
	}
	if strings.ContainsAny(idOrPath, "./ ") {
		return "", &fieldError{"id", fmt.Sprintf("%q: want a derivation id or a .drv path", idOrPath)}
	}
	return idOrPath, nil
}

// GetDerivation returns a derivation, its history, its dependents and,
// for a transitive failure or a block, the derivation at its root.
func (r *Reads) GetDerivation(idOrPath string) (*adminv1.GetDerivationResponse, error) {
	out := &adminv1.GetDerivationResponse{}
	err := r.view(func(tx *bolt.Tx) error {
		id, err := drvID(tx, idOrPath)
		if err != nil {
			return err
		}
		_, d, err := getDrv(tx, id)
		if err != nil {
			return err
		}
		if d == nil {
			return fmt.Errorf("derivation %s: %w", id, ErrNotFound)
		}
		out.Derivation = d
		if out.History, err = history(tx, id, 0); err != nil {
			return err
		}
		prefix := append([]byte(id), 0)
		cur := tx.Bucket(dependentsBucket).Cursor()
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
			out.DependentDrvIds = append(out.DependentDrvIds, string(k[len(prefix):]))
		}
		if c := d.GetCauseDrvId(); c != "" {
			if _, out.RootCause, err = getDrv(tx, c); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// history reads a derivation's transitions after sequence after.
func history(tx *bolt.Tx, id string, after uint64) ([]*adminv1.Transition, error) {
	var out []*adminv1.Transition
	prefix := append([]byte(id), 0)
	cur := tx.Bucket(historyBucket).Cursor()
	for k, v := cur.Seek(histKey(id, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		t := &adminv1.Transition{}
		if err := proto.Unmarshal(v, t); err != nil {
			return nil, fmt.Errorf("decode history of %s: %w", id, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// failed reports whether an attribute state counts as a failure.
func failed(state string) bool {
	if state == stateEvalError {
		return true
	}
	s, err := buildstate.ParseState(state)
	return err == nil && s.IsFailure()
}

// ListFailures groups a jobset's failed attributes by the derivation that
// failed or was interrupted itself; evaluation errors form a group of
// their own, without a root.
func (r *Reads) ListFailures(jobsetID string) (*adminv1.ListFailuresResponse, error) {
	if jobsetID == "" {
		return nil, &fieldError{"jobset_id", "empty"}
	}
	out := &adminv1.ListFailuresResponse{}
	err := r.view(func(tx *bolt.Tx) error {
		_, attrs, err := jobsetWithAttrs(tx, jobsetID, "")
		if err != nil {
			return err
		}
		groups := map[string]*adminv1.FailureGroup{}
		var order []string
		for _, a := range attrs {
			if !failed(a.GetState()) {
				continue
			}
			root := a.GetCauseDrvId()
			if root == "" {
				root = a.GetDrvId() // failed or interrupted itself; "" for eval errors
			}
			g := groups[root]
			if g == nil {
				g = &adminv1.FailureGroup{}
				if root != "" {
					if _, g.Root, err = getDrv(tx, root); err != nil {
						return err
					}
				}
				groups[root] = g
				order = append(order, root)
			}
			g.Attrs = append(g.Attrs, a)
		}
		for _, k := range order {
			out.Groups = append(out.Groups, groups[k])
		}
		slices.SortStableFunc(out.Groups, func(a, b *adminv1.FailureGroup) int {
			if len(a.Attrs) != len(b.Attrs) {
				return len(b.Attrs) - len(a.Attrs)
			}
			return strings.Compare(a.GetRoot().GetId(), b.GetRoot().GetId())
		})
		return nil
	})
	return out, err
}

// building lists the derivations Building, by holder.
func (r *Reads) building() (map[string][]string, error) {
	out := map[string][]string{}
	err := r.view(func(tx *bolt.Tx) error {
		return tx.Bucket(buildingBucket).ForEach(func(k, v []byte) error {
			out[string(v)] = append(out[string(v)], string(k))
			return nil
		})
	})
	return out, err
}

// attempt returns a derivation's state, latest attempt and whether the
// given attempt (0: the latest) is still running.
func (r *Reads) attempt(idOrPath string, n uint32) (id string, attempt uint32, running bool, err error) {
	err = r.view(func(tx *bolt.Tx) error {
		if id, err = drvID(tx, idOrPath); err != nil {
			return err
		}
		row, d, err := getDrv(tx, id)
		if err != nil {
			return err
		}
		if d == nil {
			return fmt.Errorf("derivation %s: %w", id, ErrNotFound)
		}
		attempt = n
		if attempt == 0 {
			attempt = row.Drv.Attempt
		}
		if attempt == 0 || attempt > row.Drv.Attempt {
			return fmt.Errorf("derivation %s: attempt %d: %w (it has had %d)", id, n, ErrNotFound, row.Drv.Attempt)
		}
		running = attempt == row.Drv.Attempt && (row.Drv.State == buildstate.Building || row.Drv.State == buildstate.Buildable)
		return nil
	})
	return id, attempt, running, err
}

// idOf resolves a .drv path to its derivation id.
func (r *Reads) idOf(path string) (string, error) {
	var id string
	err := r.view(func(tx *bolt.Tx) error {
		var err error
		id, err = drvID(tx, path)
		return err
	})
	return id, err
}

// watch reads a jobset with its counts, and the transitions of its
// attributes' derivations after those seen (updated); done once it has
// concluded.
func (r *Reads) watch(jobsetID string, seen map[string]uint64) (*adminv1.WatchJobsetResponse, bool, error) {
	if jobsetID == "" {
		return nil, false, &fieldError{"id", "empty"}
	}
	out := &adminv1.WatchJobsetResponse{}
	err := r.view(func(tx *bolt.Tx) error {
		js, attrs, err := jobsetWithAttrs(tx, jobsetID, "")
		if err != nil {
			return err
		}
		out.Jobset = js
		done := map[string]bool{}
		for _, a := range attrs {
			id := a.GetDrvId()
			if id == "" || done[id] {
				continue
			}
			done[id] = true
			ts, err := history(tx, id, seen[id])
			if err != nil {
				return err
			}
			for _, t := range ts {
				out.Transitions = append(out.Transitions, &adminv1.WatchedTransition{DrvId: id, Transition: t})
				seen[id] = t.GetSeq()
			}
		}
		slices.SortFunc(out.Transitions, func(a, b *adminv1.WatchedTransition) int {
			return int(a.GetTransition().GetSeq()) - int(b.GetTransition().GetSeq())
		})
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, out.Jobset.GetState() == "concluded", nil
}
