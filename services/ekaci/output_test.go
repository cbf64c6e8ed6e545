package ekaci

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// TestOutputOfAJobsetTooLargeToList: a conclusion that left attributes
// out says so in both outputs, with the counts of all of them.
func TestOutputOfAJobsetTooLargeToList(t *testing.T) {
	o := &Outcome{ChangeID: "c", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Summary: "1 of 1 jobs failed",
		Jobsets: []*eventsv1.JobsetConcluded{{Job: "pkgs", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE,
			Results:        []*eventsv1.AttrResult{{Attr: "broken", State: "failed", Difference: eventsv1.Difference_DIFFERENCE_NEW, Error: "boom"}},
			ResultsOmitted: 99988, Counts: map[string]uint32{"succeeded": 99988, "failed": 1}}}}
	var text bytes.Buffer
	if err := PrintText(&text, o); err != nil {
		t.Fatal(err)
	}
	if want := "job pkgs: 99988 more attributes not listed (all of them: 1 failed, 99988 succeeded)"; !strings.Contains(text.String(), want) {
		t.Fatalf("text output lacks %q:\n%s", want, text.String())
	}
	var js bytes.Buffer
	if err := PrintJSON(&js, o); err != nil {
		t.Fatal(err)
	}
	var doc jsonOutcome
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if j := doc.Jobs[0]; j.Omitted != 99988 || j.Counts["succeeded"] != 99988 || len(j.Attrs) != 1 {
		t.Fatalf("json job %+v", j)
	}
}
