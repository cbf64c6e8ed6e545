package ekaci_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/services/ekaci"
)

// dump reads every bucket of a read model except the projection's own
// bookkeeping (position, decisions).
func dump(t *testing.T, path string) map[string][]byte {
	t.Helper()
	out, err := projection.Dump(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReadModelsRebuildFromTheStream deletes both read models after a run
// with a retry and a transitive failure, lets them be rebuilt from the
// event log, and checks the rebuilt ones equal the live ones and that
// replaying decided nothing twice.
func TestReadModelsRebuildFromTheStream(t *testing.T) {
	requireNix(t)
	dataDir := t.TempDir()
	files := map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix":        failingNix,
	}
	late := func(h *harness, job string) *ekaci.Outcome {
		t.Helper()
		o := h.run(makeRepo(t, map[string]string{
			".ekaci/config.json": `{"jobs": {"` + job + `": {"file": "default.nix"}}}`,
			"default.nix":        `derivation { name = "` + job + `"; system = builtins.currentSystem; salt = "@SALT@"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }`,
		}))
		if o.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
			t.Fatalf("%s: %v (%s)", job, o.Conclusion, o.Summary)
		}
		return o
	}
	first := start(t, dataDir)
	out := first.run(makeRepo(t, files))
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("first run: %v", out.Conclusion)
	}
	// A change after it: once that concludes, both projections have
	// folded every event of the first (the live models may lag the log by
	// the last few events when the process stops; this one's are ignored).
	lateOne := late(first, "late1")
	before, err := first.app.Events().LastSeq(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	first.stop()
	models := []string{"ingress.db", "recorder.db"}
	live := map[string]map[string][]byte{}
	for _, m := range models {
		p := filepath.Join(dataDir, m)
		live[m] = dump(t, p)
		if len(live[m]) == 0 {
			t.Fatalf("%s is empty after a run", m)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}

	second := start(t, dataDir)
	// Likewise, a new change after the replay.
	late(second, "late2")
	// Nothing about the first change was appended again.
	var replayed []string
	err = second.app.Events().Read(t.Context(), before, []string{"ekaci.evt.>"}, func(r eventlog.Record) error {
		if r.Event.GetCorrelationId() == out.ChangeID || r.ID == out.ChangeID {
			replayed = append(replayed, r.Subject)
		}
		for _, drv := range drvPaths(out) {
			if id, _ := eventlog.DrvID(drv); id == r.ID {
				replayed = append(replayed, r.Subject)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(replayed) > 0 {
		t.Fatalf("rebuilding appended %d events again: %v", len(replayed), replayed)
	}
	second.stop()
	for _, m := range models {
		rebuilt := dump(t, filepath.Join(dataDir, m))
		compared := 0
		for k, v := range live[m] {
			if mentionsAny(k, lateOne) {
				continue
			}
			compared++
			if !bytes.Equal(rebuilt[k], v) {
				t.Errorf("%s %s:\n live    %s\n rebuilt %s", m, k, v, rebuilt[k])
			}
		}
		if compared < 4 {
			t.Errorf("%s: only %d rows compared", m, compared)
		}
	}
}

// mentionsAny reports whether a read-model key names the outcome's change,
// one of its jobsets or derivations.
func mentionsAny(key string, o *ekaci.Outcome) bool {
	ids := []string{o.ChangeID}
	for _, js := range o.Jobsets {
		ids = append(ids, eventlog.JobsetID(o.ChangeID, js.GetJob()))
	}
	for _, drv := range drvPaths(o) {
		if id, err := eventlog.DrvID(drv); err == nil {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		if strings.Contains(key, id) {
			return true
		}
	}
	return false
}
