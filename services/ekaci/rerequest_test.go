package ekaci_test

import (
	"os"
	"strings"
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/ekaci"
)

// TestFailedCheckoutCanBeRequestedAgain is the end of finding 9 of the
// core review for changes: a change whose checkout failed (here: its
// repository was away) concluded for good, and requesting the same
// commits again only joined that conclusion.
func TestFailedCheckoutCanBeRequestedAgain(t *testing.T) {
	requireNix(t)
	h := start(t, t.TempDir())
	repo := makeRepo(t, simpleFiles())
	head := git(t, repo, "rev-parse", "HEAD")
	req := ekaci.Request{Repo: "file://" + repo, Rev: head}
	if err := os.Rename(repo, repo+".away"); err != nil {
		t.Fatal(err)
	}
	first := h.runRequest(req)
	if first.Conclusion != eventsv1.Conclusion_CONCLUSION_FAILURE || !strings.Contains(first.Summary, "checkout failed") {
		t.Fatalf("with the repository away: %v %q, want a checkout failure", first.Conclusion, first.Summary)
	}
	if err := os.Rename(repo+".away", repo); err != nil {
		t.Fatal(err)
	}
	second := h.runRequest(req)
	if second.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS || second.ChangeID == first.ChangeID {
		t.Fatalf("requested again: %v %q (change %s, first %s), want a success of a new attempt", second.Conclusion, second.Summary, second.ChangeID, first.ChangeID)
	}
	// A third request joins the attempt that checked out.
	if third := h.runRequest(req); third.ChangeID != second.ChangeID || third.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("third request: change %s %v, want to join %s", third.ChangeID, third.Conclusion, second.ChangeID)
	}
}
