package meshtest

import (
	"strings"
	"testing"
)

// TestDiffChecks: two runs differ when a check ends otherwise, is missing,
// or is extra; logs, times and cached results do not count.
func TestDiffChecks(t *testing.T) {
	doc := func(checks string) []byte {
		return []byte(`{"conclusion":"success","jobs":[],"checks":[` + checks + `]}`)
	}
	lint := `{"name":"lint","state":"succeeded","exit_code":0,"cached":false,"duration_ms":5,"log":"a/1.log.zst","fails_change":false}`
	style := `{"name":"style","state":"failed","exit_code":1,"base":"failed","cached":false,"duration_ms":7,"fails_change":false}`
	want, err := ParseSummary(doc(lint + "," + style))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, checks, diff string
	}{
		{"the same, other log, time and cache", strings.NewReplacer(`"duration_ms":5`, `"duration_ms":90`, `a/1.log.zst`, `b/2.log.zst`, `"cached":false`, `"cached":true`).Replace(lint) + "," + style, ""},
		{"a check failed", strings.Replace(lint, `"state":"succeeded","exit_code":0`, `"state":"failed","exit_code":1`, 1) + "," + style, "check lint: failed exit=1"},
		{"the base passed", lint + "," + strings.Replace(style, `"base":"failed"`, `"base":"passed"`, 1), "check style: failed exit=1 limit= base=passed"},
		{"a limit", lint + "," + strings.Replace(style, `"exit_code":1`, `"exit_code":-1,"limit":"timeout"`, 1), "limit=timeout"},
		{"missing", lint, "check style missing"},
		{"extra", lint + "," + style + `,{"name":"x","state":"succeeded"}`, "check x (succeeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSummary(doc(tc.checks))
			if err != nil {
				t.Fatal(err)
			}
			d := strings.Join(Diff(want, got), "\n")
			if tc.diff == "" && d != "" || tc.diff != "" && !strings.Contains(d, tc.diff) {
				t.Errorf("Diff = %q, want %q", d, tc.diff)
			}
		})
	}
}
