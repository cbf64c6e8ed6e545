package recorder

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

var (
	// drvs holds <discovered sequence> → derivation row (drvrows.go).
	drvsBucket    = []byte("recorder_drvs")
	jobsetsBucket = []byte("recorder_jobsets")
	// watch holds <drv id> 0 <jobset id> → how many of the jobset's
	// attributes evaluate to that derivation.
	watchBucket   = []byte("recorder_watch")
	changesBucket = []byte("recorder_changes")
	// jobset_attrs holds <jobset id> 0 <4-byte part> <4-byte index> → one of its
	// attributes (a JobAttr, protobuf): written when the jobset is
	// evaluated, read when it concludes. The jobset row, rewritten each
	// time one of its derivations settles, stays small: a nixpkgs jobset
	// has ~100,000 attributes.
	jobsetAttrsBucket = []byte("recorder_jobset_attrs")
)

func attrKey(jobsetID string, part uint32, i int) []byte {
	k := make([]byte, 0, len(jobsetID)+9)
	k = append(append(k, jobsetID...), 0)
	k = binary.BigEndian.AppendUint32(k, part)
	return binary.BigEndian.AppendUint32(k, uint32(i))
}

// putAttrs stores one part of a jobset's attributes; part 0 replaces
// whatever an earlier evaluation stored.
func putAttrs(tx *bolt.Tx, jobsetID string, part uint32, attrs []*eventsv1.JobAttr) error {
	b := tx.Bucket(jobsetAttrsBucket)
	if part == 0 {
		prefix := append([]byte(jobsetID), 0)
		var stale [][]byte
		cur := b.Cursor()
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
			stale = append(stale, append([]byte(nil), k...))
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	b.FillPercent = 1.0 // written once, in key order
	for i, a := range attrs {
		raw, err := marshalAttr(a)
		if err != nil {
			return err
		}
		if err := b.Put(attrKey(jobsetID, part, i), raw); err != nil {
			return err
		}
	}
	return nil
}

// eachAttr calls fn with every stored attribute of a jobset, in order.
func eachAttr(tx *bolt.Tx, jobsetID string, fn func(*eventsv1.JobAttr) error) error {
	prefix := append([]byte(jobsetID), 0)
	cur := tx.Bucket(jobsetAttrsBucket).Cursor()
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		a, err := unmarshalAttr(v)
		if err != nil {
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

type jobsetRow struct {
	ChangeID   string              `json:"change"`
	Job        string              `json:"job"`
	Attrs      int                 `json:"attrs"` // how many, in jobset_attrs
	Unsettled  int                 `json:"unsettled"`
	Concluded  bool                `json:"concluded"`
	Conclusion eventsv1.Conclusion `json:"conclusion"`
	// Last is the stream sequence of the jobset's latest event seen. The
	// conclusion is appended expecting it, so a replay (a rebuilt read
	// model) that decides again is refused where the conclusion exists.
	Last uint64 `json:"last"`
}

type changeRow struct {
	Jobsets   []string                       `json:"jobsets"`
	Concluded map[string]eventsv1.Conclusion `json:"concluded"`
	Expected  bool                           `json:"expected"` // the config was read
	Done      bool                           `json:"done"`
	Last      uint64                         `json:"last"` // as jobsetRow.Last
}

func getJSON[T any](tx *bolt.Tx, bucket []byte, key string) (*T, error) {
	v := tx.Bucket(bucket).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	var t T
	if err := json.Unmarshal(v, &t); err != nil {
		return nil, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return &t, nil
}

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

// Conclusions is the recorder's read model of derivation outcomes,
// jobsets and changes.
//
// Every derivation row, and the set of derivations some jobset watches,
// is held in memory as well as in the file: Init loads them, Flush writes
// back the rows a batch changed. Should a batch's transaction not commit,
// memory is ahead of the file, and the next batch reloads it.
type Conclusions struct {
	logger zerolog.Logger
	// resultBudget bounds the JSON bytes of results a conclusion lists
	// (0: DefaultResultBudget).
	resultBudget int
	drvs         *drvTable
	// watched are the derivations with an entry in the watch bucket: the
	// only ones whose settling can move a jobset.
	watched map[string]struct{}
	// tx is the transaction of the batch being folded; uncommitted is set
	// from a batch's first fold until its transaction commits.
	tx          *bolt.Tx
	uncommitted bool
}

// NewConclusions returns the model.
func NewConclusions(logger zerolog.Logger) *Conclusions {
	return &Conclusions{logger: logger, drvs: newDrvTable(), watched: map[string]struct{}{}}
}

// WithResultBudget bounds the JSON bytes of results one jobset_concluded
// lists, so that it fits one message.
func (c *Conclusions) WithResultBudget(bytes int) *Conclusions {
	c.resultBudget = bytes
	return c
}

// Version implements projection.Versioned. Version 3: derivation rows in
// a binary encoding (binrow) keyed by their discovered sequence; watch
// keys with a 0 byte between the derivation and the jobset id; a jobset's
// attributes in a bucket of their own.
func (*Conclusions) Version() uint32 { return 3 }

var buckets = [][]byte{drvsBucket, jobsetsBucket, watchBucket, changesBucket, jobsetAttrsBucket}

// Reset implements projection.Versioned.
func (*Conclusions) Reset(tx *bolt.Tx) error {
	for _, b := range buckets {
		if tx.Bucket(b) == nil {
			continue
		}
		if err := tx.DeleteBucket(b); err != nil {
			return fmt.Errorf("delete %s: %w", b, err)
		}
	}
	return nil
}

// Flush implements projection.Flusher.
func (c *Conclusions) Flush(tx *bolt.Tx) error {
	// Through begin too: a batch that folded nothing must not write rows
	// a failed batch left in memory.
	if err := c.begin(tx); err != nil {
		return err
	}
	return c.drvs.flush(tx.Bucket(drvsBucket))
}

// Name implements projection.Handler.
func (*Conclusions) Name() string { return ReadModel }

// ReadModel names the recorder's read model (for a shared projection.Feed).
const ReadModel = "recorder"

// Filters implements projection.Handler.
func (*Conclusions) Filters() []string {
	return []string{eventlog.KindFilter(eventlog.Change), eventlog.KindFilter(eventlog.Jobset), eventlog.KindFilter(eventlog.Drv)}
}

// Init implements projection.Handler.
func (c *Conclusions) Init(tx *bolt.Tx) error {
	for _, b := range buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return c.load(tx)
}

// load reads the in-memory state from the file.
func (c *Conclusions) load(tx *bolt.Tx) error {
	c.tx, c.uncommitted = nil, false
	if err := c.drvs.load(tx.Bucket(drvsBucket)); err != nil {
		return err
	}
	clear(c.watched)
	return tx.Bucket(watchBucket).ForEach(func(k, _ []byte) error {
		drv, _, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return fmt.Errorf("decode %s/%q: no separator", watchBucket, k)
		}
		c.watched[string(drv)] = struct{}{}
		return nil
	})
}

// begin is called by every fold and flush. The first of a batch checks
// that the previous batch that changed memory committed, and reloads
// memory from the file if it did not.
func (c *Conclusions) begin(tx *bolt.Tx) error {
	if tx == c.tx {
		return nil
	}
	if c.uncommitted {
		c.logger.Warn().Msg("a batch did not commit: reloading the read model")
		if err := c.load(tx); err != nil {
			return err
		}
	}
	c.tx, c.uncommitted = tx, true
	tx.OnCommit(func() { c.uncommitted = false })
	return nil
}

func watchKey(drvID, jobsetID string) []byte {
	k := make([]byte, 0, len(drvID)+1+len(jobsetID))
	k = append(append(k, drvID...), 0)
	return append(k, jobsetID...)
}

// Apply implements projection.Handler.
func (c *Conclusions) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	if err := c.begin(tx); err != nil {
		return err
	}
	switch rec.Aggregate {
	case eventlog.Drv:
		return c.drv(tx, rec, out)
	case eventlog.Jobset:
		return c.jobset(tx, rec, out)
	case eventlog.Change:
		return c.change(tx, rec, out)
	}
	return nil
}

func (c *Conclusions) drv(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	if ids, each, ok := buildstate.Downstream(rec.ID, rec.Event); ok {
		// One fact on the failed derivation; each listed one takes the
		// dependency_failed transition it stands for.
		if err := c.fold(tx, rec.ID, rec.Event, rec, out); err != nil {
			return err
		}
		for _, id := range ids {
			if err := c.fold(tx, id, each, rec, out); err != nil {
				return err
			}
		}
		return nil
	}
	return c.fold(tx, rec.ID, rec.Event, rec, out)
}

// fold applies ev to derivation id's row; rec is the fact it came in.
func (c *Conclusions) fold(tx *bolt.Tx, id string, ev *eventsv1.Event, rec eventlog.Record, out *projection.Outbox) error {
	row, found := c.drvs.lookup(id)
	next, err := buildstate.Next(row.Drv, ev)
	if err != nil {
		c.logger.Error().Err(err).Str("drv", id).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
		return nil
	}
	if !found {
		// Cloned: rec.ID is a slice of the subject, which the row would
		// otherwise keep alive.
		row.ID, row.Key = strings.Clone(id), rec.Seq
	}
	wasSettled := row.Drv.State.Settled()
	row.Drv = next
	switch p := ev.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		row.Path = p.DrvDiscovered.GetDrvPath()
	case *eventsv1.Event_DrvBuildSucceeded:
		row.Millis, row.Detail, row.Cause = p.DrvBuildSucceeded.GetDurationMs(), "", ""
	case *eventsv1.Event_DrvBuildFailed:
		row.Millis, row.Detail = p.DrvBuildFailed.GetDurationMs(), p.DrvBuildFailed.GetLogTail()
	case *eventsv1.Event_DrvBuildFailedRetry:
		row.Millis, row.Detail = p.DrvBuildFailedRetry.GetDurationMs(), p.DrvBuildFailedRetry.GetLogTail()
	case *eventsv1.Event_DrvInterrupted:
		row.Detail = p.DrvInterrupted.GetDetail()
	case *eventsv1.Event_DrvDependencyFailed:
		row.Cause = p.DrvDependencyFailed.GetCauseDrvPath()
	case *eventsv1.Event_DrvBlocked:
		row.Cause = p.DrvBlocked.GetCauseDrvPath()
	}
	c.drvs.put(row)
	delta := 0
	switch settled := next.State.Settled(); {
	case settled && !wasSettled:
		delta = -1
	case !settled && wasSettled:
		delta = 1
	}
	if delta == 0 {
		return nil
	}
	if _, ok := c.watched[id]; !ok {
		return nil // no jobset waits for it
	}
	cur := tx.Bucket(watchBucket).Cursor()
	prefix := watchKey(id, "")
	var touched []string
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		jobsetID := string(k[len(prefix):])
		js, err := getJSON[jobsetRow](tx, jobsetsBucket, jobsetID)
		if err != nil || js == nil {
			return err
		}
		js.Unsettled += delta * int(binary.BigEndian.Uint32(v))
		if err := putJSON(tx, jobsetsBucket, jobsetID, js); err != nil {
			return err
		}
		touched = append(touched, jobsetID)
	}
	for _, id := range touched {
		if err := c.maybeConclude(tx, id, rec, out); err != nil {
			return err
		}
	}
	return nil
}

func (c *Conclusions) jobset(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	if js, err := getJSON[jobsetRow](tx, jobsetsBucket, rec.ID); err != nil {
		return err
	} else if js != nil {
		js.Last = rec.Seq
		if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
			return err
		}
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_JobsetCreated:
		return putJSON(tx, jobsetsBucket, rec.ID, &jobsetRow{ChangeID: p.JobsetCreated.GetChangeId(), Job: p.JobsetCreated.GetJob(), Last: rec.Seq})
	case *eventsv1.Event_JobsetEvaluated:
		js, err := getJSON[jobsetRow](tx, jobsetsBucket, rec.ID)
		if err != nil {
			return err
		}
		if js == nil {
			js = &jobsetRow{ChangeID: p.JobsetEvaluated.GetChangeId(), Last: rec.Seq}
		}
		ev := p.JobsetEvaluated
		js.Unsettled = 0
		// The last part: the attributes of jobset_attrs_listed parts (if
		// any) are stored already.
		if err := putAttrs(tx, rec.ID, ev.GetAttrParts(), ev.GetAttrs()); err != nil {
			return err
		}
		js.Attrs = 0
		err = eachAttr(tx, rec.ID, func(a *eventsv1.JobAttr) error {
			js.Attrs++
			if a.GetDrvId() == "" {
				return nil
			}
			key := watchKey(a.GetDrvId(), rec.ID)
			n := uint32(0)
			if v := tx.Bucket(watchBucket).Get(key); v != nil {
				n = binary.BigEndian.Uint32(v)
			}
			if err := tx.Bucket(watchBucket).Put(key, binary.BigEndian.AppendUint32(nil, n+1)); err != nil {
				return err
			}
			c.watched[a.GetDrvId()] = struct{}{}
			if row, ok := c.drvs.lookup(a.GetDrvId()); !ok || !row.Drv.State.Settled() {
				js.Unsettled++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if want := ev.GetAttrCount(); want != 0 && uint32(js.Attrs) != want {
			c.logger.Error().Str("jobset", rec.ID).Int("stored", js.Attrs).Uint32("listed", want).Msg("a part of the jobset's attributes is missing from the log")
		}
		if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
			return err
		}
		return c.maybeConclude(tx, rec.ID, rec, out)
	case *eventsv1.Event_JobsetAttrsListed:
		return putAttrs(tx, rec.ID, p.JobsetAttrsListed.GetPart(), p.JobsetAttrsListed.GetAttrs())
	case *eventsv1.Event_JobsetEvalFailed:
		js, err := getJSON[jobsetRow](tx, jobsetsBucket, rec.ID)
		if err != nil {
			return err
		}
		if js == nil {
			js = &jobsetRow{ChangeID: p.JobsetEvalFailed.GetChangeId(), Last: rec.Seq}
		}
		if js.Concluded {
			return nil
		}
		js.Concluded = true
		if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
			return err
		}
		out.Append(rec.ID, &eventsv1.Event{
			Id: "concluded-" + rec.ID, CausationId: rec.Event.GetId(), CorrelationId: js.ChangeID,
			Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{
				ChangeId: js.ChangeID, Job: js.Job, Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE,
				Results: []*eventsv1.AttrResult{{State: "eval-failed", Error: p.JobsetEvalFailed.GetError()}},
			}},
		}, js.Last)
		return nil
	case *eventsv1.Event_JobsetConcluded:
		ch, err := getJSON[changeRow](tx, changesBucket, p.JobsetConcluded.GetChangeId())
		if err != nil {
			return err
		}
		if ch == nil {
			ch = &changeRow{}
		}
		if ch.Concluded == nil {
			ch.Concluded = map[string]eventsv1.Conclusion{}
		}
		ch.Concluded[rec.ID] = p.JobsetConcluded.GetConclusion()
		if err := putJSON(tx, changesBucket, p.JobsetConcluded.GetChangeId(), ch); err != nil {
			return err
		}
		return c.maybeConcludeChange(tx, p.JobsetConcluded.GetChangeId(), ch, rec, out)
	}
	return nil
}

func (c *Conclusions) change(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	ch, err := getJSON[changeRow](tx, changesBucket, rec.ID)
	if err != nil {
		return err
	}
	if ch == nil {
		ch = &changeRow{Concluded: map[string]eventsv1.Conclusion{}}
	}
	ch.Last = rec.Seq
	if err := putJSON(tx, changesBucket, rec.ID, ch); err != nil {
		return err
	}
	conclude := func(conclusion eventsv1.Conclusion, summary string) error {
		if ch.Done {
			return nil
		}
		ch.Done = true
		if err := putJSON(tx, changesBucket, rec.ID, ch); err != nil {
			return err
		}
		out.Append(rec.ID, &eventsv1.Event{
			Id: "concluded-" + rec.ID, CausationId: rec.Event.GetId(), CorrelationId: rec.ID,
			Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{
				Conclusion: conclusion, Summary: summary, JobsetIds: ch.Jobsets,
			}},
		}, ch.Last)
		return nil
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_ChangeCheckoutFailed:
		return conclude(eventsv1.Conclusion_CONCLUSION_FAILURE, "checkout failed: "+p.ChangeCheckoutFailed.GetError())
	case *eventsv1.Event_ChangeConfigInvalid:
		return conclude(eventsv1.Conclusion_CONCLUSION_FAILURE, "invalid CI configuration: "+p.ChangeConfigInvalid.GetError())
	case *eventsv1.Event_ChangeConfigRead:
		if !p.ChangeConfigRead.GetConfigured() {
			return conclude(eventsv1.Conclusion_CONCLUSION_NEUTRAL, "no CI configured (.ekaci/config.json not found)")
		}
		ch.Expected = true
		ch.Jobsets = nil
		for _, job := range p.ChangeConfigRead.GetJobs() {
			ch.Jobsets = append(ch.Jobsets, eventlog.JobsetID(rec.ID, job))
		}
		if err := putJSON(tx, changesBucket, rec.ID, ch); err != nil {
			return err
		}
		return c.maybeConcludeChange(tx, rec.ID, ch, rec, out)
	case *eventsv1.Event_ChangeConcluded:
		ch.Done = true
		return putJSON(tx, changesBucket, rec.ID, ch)
	}
	return nil
}

func (c *Conclusions) maybeConcludeChange(tx *bolt.Tx, changeID string, ch *changeRow, rec eventlog.Record, out *projection.Outbox) error {
	if ch.Done || !ch.Expected {
		return nil
	}
	failed := 0
	for _, id := range ch.Jobsets {
		conclusion, ok := ch.Concluded[id]
		if !ok {
			return nil
		}
		if conclusion == eventsv1.Conclusion_CONCLUSION_FAILURE {
			failed++
		}
	}
	ch.Done = true
	if err := putJSON(tx, changesBucket, changeID, ch); err != nil {
		return err
	}
	conclusion := eventsv1.Conclusion_CONCLUSION_SUCCESS
	if failed > 0 {
		conclusion = eventsv1.Conclusion_CONCLUSION_FAILURE
	}
	out.Append(changeID, &eventsv1.Event{
		Id: "concluded-" + changeID, CausationId: rec.Event.GetId(), CorrelationId: changeID,
		Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{
			Conclusion: conclusion, JobsetIds: ch.Jobsets,
			Summary: fmt.Sprintf("%d of %d jobs failed", failed, len(ch.Jobsets)),
		}},
	}, ch.Last)
	return nil
}

// maybeConclude concludes a jobset whose attributes are all settled. Only
// new or changed attributes (or all, without a base) decide the verdict.
func (c *Conclusions) maybeConclude(tx *bolt.Tx, jobsetID string, rec eventlog.Record, out *projection.Outbox) error {
	js, err := getJSON[jobsetRow](tx, jobsetsBucket, jobsetID)
	if err != nil || js == nil {
		return err
	}
	if js.Concluded || js.Unsettled > 0 {
		return nil
	}
	conclusion := eventsv1.Conclusion_CONCLUSION_SUCCESS
	var results []*eventsv1.AttrResult
	err = eachAttr(tx, jobsetID, func(a *eventsv1.JobAttr) error {
		r := &eventsv1.AttrResult{Attr: a.GetAttr(), DrvPath: a.GetDrvPath(), Difference: a.GetDifference(), Error: a.GetEvalError(), State: "eval-error"}
		if a.GetDifference() == eventsv1.Difference_DIFFERENCE_REMOVED {
			// Only in the base: nothing to build.
			r.State = "removed"
		}
		if a.GetDrvId() != "" {
			if row, ok := c.drvs.lookup(a.GetDrvId()); ok {
				r.State, r.Cause, r.Error, r.DurationMs = row.Drv.State.String(), row.Cause, row.Detail, row.Millis
				decides := a.GetDifference() != eventsv1.Difference_DIFFERENCE_UNCHANGED
				if decides && row.Drv.State.IsFailure() {
					conclusion = eventsv1.Conclusion_CONCLUSION_FAILURE
				}
			}
		}
		results = append(results, r)
		return nil
	})
	if err != nil {
		return err
	}
	results, omitted, counts := c.fit(results)
	js.Concluded, js.Conclusion = true, conclusion
	if err := putJSON(tx, jobsetsBucket, jobsetID, js); err != nil {
		return err
	}
	out.Append(jobsetID, &eventsv1.Event{
		Id: "concluded-" + jobsetID, CausationId: rec.Event.GetId(), CorrelationId: js.ChangeID,
		Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{
			ChangeId: js.ChangeID, Job: js.Job, Conclusion: conclusion, Results: results,
			ResultsOmitted: omitted, Counts: counts,
		}},
	}, js.Last)
	return nil
}

// DefaultResultBudget bounds the results one jobset_concluded lists, in
// bytes of JSON: half of NATS's default 1 MiB message.
const DefaultResultBudget = 512 << 10

// resultRank orders what a conclusion lists first when not all fits: the
// failures that decide the verdict, then other failures and evaluation
// errors, then the rest.
func resultRank(r *eventsv1.AttrResult) int {
	failed := r.GetState() != "succeeded" && r.GetState() != "removed"
	decides := r.GetDifference() != eventsv1.Difference_DIFFERENCE_UNCHANGED
	switch {
	case failed && decides:
		return 0
	case failed:
		return 1
	}
	return 2
}

// fit keeps the results that fit the budget — the most telling first —
// sorted by attribute, and counts every result by state.
func (c *Conclusions) fit(results []*eventsv1.AttrResult) ([]*eventsv1.AttrResult, uint32, map[string]uint32) {
	counts := map[string]uint32{}
	for _, r := range results {
		counts[r.GetState()]++
	}
	budget := c.resultBudget
	if budget <= 0 {
		budget = DefaultResultBudget
	}
	sort.SliceStable(results, func(i, j int) bool {
		if a, b := resultRank(results[i]), resultRank(results[j]); a != b {
			return a < b
		}
		return results[i].GetAttr() < results[j].GetAttr()
	})
	used, kept := 0, 0
	for _, r := range results {
		size := eventlog.JSONSize(r) + 1 // and a comma
		if used+size > budget {
			break
		}
		used += size
		kept++
	}
	omitted := uint32(len(results) - kept)
	results = results[:kept]
	sort.Slice(results, func(i, j int) bool { return results[i].GetAttr() < results[j].GetAttr() })
	if omitted > 0 {
		c.logger.Warn().Int("listed", kept).Uint32("omitted", omitted).Msg("jobset too large for one message: its conclusion lists the failures first")
	}
	return results, omitted, counts
}

func marshalAttr(a *eventsv1.JobAttr) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(a)
}

func unmarshalAttr(raw []byte) (*eventsv1.JobAttr, error) {
	a := &eventsv1.JobAttr{}
	if err := proto.Unmarshal(raw, a); err != nil {
		return nil, fmt.Errorf("decode stored attribute: %w", err)
	}
	return a, nil
}
