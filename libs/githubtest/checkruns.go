package githubtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// GitHub's limits on check runs.
const (
	MaxSummary        = 65535 // characters of output.summary and output.text
	MaxAnnotations    = 50    // annotations in one request
	MaxRunsPerName    = 1000  // check runs of one name on one commit
	maxExternalID     = 255   // not documented; kept small as GitHub does
	maxActionLabel    = 20
	maxActionDesc     = 40
	maxActionID       = 20
	maxActions        = 3
	maxCheckRunNameLn = 255
)

var (
	statuses    = map[string]bool{"queued": true, "in_progress": true, "completed": true}
	conclusions = map[string]bool{"action_required": true, "cancelled": true, "failure": true, "neutral": true,
		"success": true, "skipped": true, "stale": true, "timed_out": true}
)

type checkRunBody struct {
	Name       *string `json:"name"`
	HeadSHA    *string `json:"head_sha"`
	Status     *string `json:"status"`
	Conclusion *string `json:"conclusion"`
	ExternalID *string `json:"external_id"`
	DetailsURL *string `json:"details_url"`
	Output     *struct {
		Title       *string           `json:"title"`
		Summary     *string           `json:"summary"`
		Text        *string           `json:"text"`
		Annotations []json.RawMessage `json:"annotations"`
	} `json:"output"`
	Actions []Action `json:"actions"`
}

// readBody decodes a check-run request and keeps its raw form for Calls.
func readBody(r *http.Request) (checkRunBody, map[string]any, error) {
	var b checkRunBody
	raw, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return b, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return b, nil, fmt.Errorf("body is not a JSON object: %w", err)
	}
	return b, m, json.Unmarshal(raw, &b)
}

// validate applies GitHub's rules to a create (create) or update body
// over the run as it stands (nil for a create).
func validate(b checkRunBody, old *CheckRun) error {
	if b.Name != nil && (*b.Name == "" || utf8.RuneCountInString(*b.Name) > maxCheckRunNameLn) {
		return fmt.Errorf("name %q: want 1 to %d characters", *b.Name, maxCheckRunNameLn)
	}
	if old == nil && (b.Name == nil || b.HeadSHA == nil || *b.HeadSHA == "") {
		return fmt.Errorf("a check run needs name and head_sha")
	}
	if b.Status != nil && !statuses[*b.Status] {
		return fmt.Errorf("status %q is not one of queued, in_progress, completed", *b.Status)
	}
	if b.Conclusion != nil && !conclusions[*b.Conclusion] {
		return fmt.Errorf("conclusion %q is not a check-run conclusion", *b.Conclusion)
	}
	if b.Status != nil && *b.Status == "completed" && b.Conclusion == nil && (old == nil || old.Conclusion == "") {
		return fmt.Errorf("status completed needs a conclusion")
	}
	if b.ExternalID != nil && len(*b.ExternalID) > maxExternalID {
		return fmt.Errorf("external_id is %d bytes", len(*b.ExternalID))
	}
	if o := b.Output; o != nil {
		if o.Title == nil || o.Summary == nil {
			return fmt.Errorf("output needs title and summary")
		}
		if n := utf8.RuneCountInString(*o.Summary); n > MaxSummary {
			return fmt.Errorf("output.summary is %d characters, at most %d", n, MaxSummary)
		}
		if o.Text != nil && utf8.RuneCountInString(*o.Text) > MaxSummary {
			return fmt.Errorf("output.text is %d characters, at most %d", utf8.RuneCountInString(*o.Text), MaxSummary)
		}
		if len(o.Annotations) > MaxAnnotations {
			return fmt.Errorf("%d annotations in one request, at most %d", len(o.Annotations), MaxAnnotations)
		}
	}
	if len(b.Actions) > maxActions {
		return fmt.Errorf("%d actions, at most %d", len(b.Actions), maxActions)
	}
	for _, a := range b.Actions {
		if a.Label == "" || len(a.Label) > maxActionLabel || a.Description == "" || len(a.Description) > maxActionDesc ||
			a.Identifier == "" || len(a.Identifier) > maxActionID {
			return fmt.Errorf("action %+v: label ≤ %d, description ≤ %d, identifier ≤ %d characters, none empty",
				a, maxActionLabel, maxActionDesc, maxActionID)
		}
	}
	return nil
}

func (c *CheckRun) apply(b checkRunBody) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.Name, b.Name)
	set(&c.HeadSHA, b.HeadSHA)
	set(&c.Status, b.Status)
	set(&c.Conclusion, b.Conclusion)
	set(&c.ExternalID, b.ExternalID)
	set(&c.DetailsURL, b.DetailsURL)
	if b.Conclusion != nil && b.Status == nil {
		c.Status = "completed" // GitHub completes a run given a conclusion
	}
	if o := b.Output; o != nil {
		set(&c.Title, o.Title)
		set(&c.Summary, o.Summary)
		set(&c.Text, o.Text)
		c.Annotations += len(o.Annotations)
	}
	if b.Actions != nil {
		c.Actions = b.Actions
	}
}

func (s *Server) createCheckRun(w http.ResponseWriter, r *http.Request, repo string) {
	b, raw, err := readBody(r)
	if err == nil {
		err = validate(b, nil)
	}
	if err != nil {
		s.refuse(w, http.StatusUnprocessableEntity, "create check run on %s: %v", repo, err)
		return
	}
	s.mu.Lock()
	same := 0
	for _, c := range s.checkRuns {
		if c.Repo == repo && c.HeadSHA == *b.HeadSHA && c.Name == *b.Name {
			same++
		}
	}
	if same >= MaxRunsPerName {
		s.mu.Unlock()
		s.refuse(w, http.StatusUnprocessableEntity, "create check run on %s: %d check runs named %q on %s already", repo, same, *b.Name, *b.HeadSHA)
		return
	}
	c := &CheckRun{ID: int64(len(s.checkRuns) + 1), Repo: repo, Status: "queued"}
	c.apply(b)
	s.checkRuns = append(s.checkRuns, c)
	s.calls = append(s.calls, Call{Method: http.MethodPost, Path: r.URL.Path, RunID: c.ID, Body: raw})
	out := c.json()
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) run(repo, id string) *CheckRun {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n < 1 || int(n) > len(s.checkRuns) || s.checkRuns[n-1].Repo != repo {
		return nil
	}
	return s.checkRuns[n-1]
}

func (s *Server) updateCheckRun(w http.ResponseWriter, r *http.Request, repo string) {
	b, raw, err := readBody(r)
	if err != nil {
		s.refuse(w, http.StatusUnprocessableEntity, "update check run on %s: %v", repo, err)
		return
	}
	s.mu.Lock()
	c := s.run(repo, r.PathValue("id"))
	if c == nil {
		s.mu.Unlock()
		s.refuse(w, http.StatusNotFound, "update check run %s on %s: no such check run", r.PathValue("id"), repo)
		return
	}
	if err := validate(b, c); err != nil {
		s.mu.Unlock()
		s.refuse(w, http.StatusUnprocessableEntity, "update check run %d on %s: %v", c.ID, repo, err)
		return
	}
	c.apply(b)
	s.calls = append(s.calls, Call{Method: http.MethodPatch, Path: r.URL.Path, RunID: c.ID, Body: raw})
	out := c.json()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getCheckRun(w http.ResponseWriter, r *http.Request, repo string) {
	s.mu.Lock()
	c := s.run(repo, r.PathValue("id"))
	var out map[string]any
	if c != nil {
		out = c.json()
	}
	s.mu.Unlock()
	if c == nil {
		s.refuse(w, http.StatusNotFound, "check run %s on %s: no such check run", r.PathValue("id"), repo)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// listCheckRuns lists a commit's check runs, newest first, filtered by
// check_name as GitHub does (one page of up to 100).
func (s *Server) listCheckRuns(w http.ResponseWriter, r *http.Request, repo string) {
	name := r.URL.Query().Get("check_name")
	ref := r.PathValue("ref")
	s.mu.Lock()
	var runs []map[string]any
	for _, c := range sortedRuns(s.checkRuns) {
		if c.Repo == repo && c.HeadSHA == ref && (name == "" || c.Name == name) && len(runs) < 100 {
			runs = append(runs, c.json())
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(runs), "check_runs": runs})
}

func (c *CheckRun) json() map[string]any {
	m := map[string]any{"id": c.ID, "name": c.Name, "head_sha": c.HeadSHA, "status": c.Status,
		"external_id": c.ExternalID, "details_url": c.DetailsURL,
		"output": map[string]any{"title": c.Title, "summary": c.Summary, "text": c.Text, "annotations_count": c.Annotations}}
	if c.Conclusion != "" {
		m["conclusion"] = c.Conclusion
	}
	return m
}
