package ekaci_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/eventlog"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/services/admin"
	"github.com/ekaci/ekaci/services/ekaci"
)

// adminFiles: good builds, bad fails (twice: it is retried once), usesBad
// fails with it, slow prints three lines, waits for marker, prints three
// more: a log to follow while it runs.
func adminFiles(marker string) map[string]string {
	return map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix": `
let mk = name: inputs: script: derivation { inherit name inputs; system = builtins.currentSystem; salt = "@SALT@";
  PATH = "/usr/bin:/bin"; builder = "/bin/sh"; args = [ "-c" script ]; };
in rec {
  good = mk "good" [ ] "echo ok > $out";
  bad = mk "bad" [ ] "echo nope; exit 1";
  usesBad = mk "uses-bad" [ bad ] "echo > $out";
  slow = mk "slow" [ good ] "for i in 1 2 3; do echo line $i; done; while [ ! -e @MARKER@ ]; do sleep 0.1; done; for i in 4 5 6; do echo line $i; done; echo > $out";
}`,
	}
}

// adminHarness is the all-in-one with its admin API on a unix socket, on
// TCP (token "s3cret") and build logs over HTTP.
type adminHarness struct {
	*harness
	lis  admin.Listening
	unix adminv1.AdminClient
	tcp  *grpc.ClientConn
}

const adminToken = "s3cret"

func startAdmin(t *testing.T) *adminHarness {
	t.Helper()
	ready := make(chan admin.Listening, 1)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	h := startWith(t, t.TempDir(), func(c *ekaci.Config) {
		c.Admin = ekaci.AdminConfig{Socket: sock, Addr: "127.0.0.1:0", Token: adminToken, LogsAddr: "127.0.0.1:0",
			Ready: func(l admin.Listening) { ready <- l }}
	})
	var lis admin.Listening
	select {
	case lis = <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the admin API did not listen within 30 s")
	}
	uc, err := grpc.NewClient("unix://"+lis.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	tc, err := grpc.NewClient(lis.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return &adminHarness{harness: h, lis: lis, unix: adminv1.NewAdminClient(uc), tcp: tc}
}

func withToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// TestAdminAPI drives a real pipeline (real Nix) and checks every read,
// the log tail of a running build from its first line to its end, the
// auth rules and error codes over TCP and the unix socket, an action and
// the read that follows it, the HTTP log routes with hostile paths, and a
// read model rebuilt from the log answering as the live one.
func TestAdminAPI(t *testing.T) {
	requireNix(t)
	h := startAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	markers, err := os.MkdirTemp("", "ekaci-admin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markers) })
	if err := os.Chmod(markers, 0o777); err != nil { // builders run as Nix's build users
		t.Fatal(err)
	}
	marker := filepath.Join(markers, "go")
	files := adminFiles(marker)
	files["default.nix"] = strings.ReplaceAll(files["default.nix"], "@MARKER@", marker)
	repo := makeRepo(t, files)
	cr, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	changeID, err := ekaci.Submit(ctx, h.app.Events(), cr)
	if err != nil {
		t.Fatal(err)
	}
	jobsetID := eventlog.JobsetID(changeID, "main")
	c := h.unix

	// Follow slow's log while it builds, from its first line to its end.
	var slowID string
	natstest.Eventually(t, 2*time.Minute, func() bool {
		js, err := c.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: jobsetID})
		if err != nil {
			return false
		}
		for _, a := range js.GetAttrs() {
			if a.GetAttr() == "slow" && (a.GetState() == "building" || a.GetState() == "buildable") {
				slowID = a.GetDrvId()
				return true
			}
		}
		return false
	}, "slow is about to build or building")
	// Watch the jobset until it concludes, meanwhile.
	type watched struct {
		msgs []*adminv1.WatchJobsetResponse
		err  error
	}
	watchDone := make(chan watched, 1)
	ws, err := c.WatchJobset(ctx, &adminv1.WatchJobsetRequest{Id: jobsetID})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		var w watched
		for {
			m, err := ws.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				w.err = err
				break
			}
			w.msgs = append(w.msgs, m)
		}
		watchDone <- w
	}()
	tail, err := c.TailLog(ctx, &adminv1.TailLogRequest{DrvId: slowID, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var followed strings.Builder
	released := false
	for {
		m, err := tail.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("tail slow: %v", err)
		}
		followed.Write(m.GetData())
		if !released && strings.Contains(followed.String(), "line 3\n") {
			// Seen while slow runs (it waits for the marker): now let it end.
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			released = true
		}
	}
	if !released {
		t.Fatalf("the follow ended before slow printed its first lines: %q", followed.String())
	}
	if want := "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n"; !strings.Contains(followed.String(), want) {
		t.Fatalf("followed log of slow = %q, want it to hold %q", followed.String(), want)
	}
	d, err := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: slowID})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetDerivation().GetState() != "succeeded" {
		t.Fatalf("the follow ended while slow is %s, want it ended by slow's success", d.GetDerivation().GetState())
	}

	out, err := ekaci.Wait(ctx, h.app.Events(), changeID, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("change concluded %v, want failure", out.Conclusion)
	}
	w := <-watchDone
	if w.err != nil {
		t.Fatalf("watch: %v", w.err)
	}
	var sawSlow bool
	for _, m := range w.msgs {
		for _, tr := range m.GetTransitions() {
			if tr.GetDrvId() == slowID && tr.GetTransition().GetFact() == "build_succeeded" {
				sawSlow = true
			}
		}
	}
	if end := w.msgs[len(w.msgs)-1].GetJobset(); len(w.msgs) < 2 || !sawSlow || end.GetState() != "concluded" || end.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("watch sent %d updates (slow's success seen: %v), the last %v; want updates until it concluded failure", len(w.msgs), sawSlow, end)
	}
	last, err := h.app.Events().LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Reads, after the model has folded the conclusion.
	lc, err := c.ListChanges(ctx, &adminv1.ListChangesRequest{AfterSeq: last})
	if err != nil {
		t.Fatal(err)
	}
	if len(lc.GetChanges()) != 1 || lc.Changes[0].GetId() != changeID || lc.Changes[0].GetState() != "concluded" ||
		lc.Changes[0].GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE || lc.Changes[0].GetHeadCommit() != cr.GetHeadCommit() {
		t.Fatalf("ListChanges = %v", lc)
	}
	if lc, err := c.ListChanges(ctx, &adminv1.ListChangesRequest{State: "requested"}); err != nil || len(lc.GetChanges()) != 0 {
		t.Fatalf("ListChanges(state requested) = %v, %v; want none", lc, err)
	}
	gc, err := c.GetChange(ctx, &adminv1.GetChangeRequest{Id: changeID})
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.GetJobsets()) != 1 || gc.Jobsets[0].GetId() != jobsetID || gc.Jobsets[0].GetCounts()["failed"] != 1 || gc.Jobsets[0].GetCounts()["succeeded"] != 2 {
		t.Fatalf("GetChange jobsets = %v", gc.GetJobsets())
	}
	failedOnly, err := c.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: jobsetID, State: "failed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(failedOnly.GetAttrs()) != 1 || failedOnly.Attrs[0].GetAttr() != "bad" || !strings.Contains(failedOnly.Attrs[0].GetError(), "nope") {
		t.Fatalf("GetJobset(state failed) = %v", failedOnly.GetAttrs())
	}
	badID := failedOnly.Attrs[0].GetDrvId()
	bad, err := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: failedOnly.Attrs[0].GetDrvPath()})
	if err != nil {
		t.Fatal(err)
	}
	var facts []string
	for _, tr := range bad.GetHistory() {
		facts = append(facts, tr.GetFact())
	}
	if got, want := strings.Join(facts, " "), "discovered buildable build_started build_failed_retry requeued buildable build_started build_failed"; got != want {
		t.Fatalf("bad's history = %s, want %s", got, want)
	}
	if as := bad.GetDerivation().GetAttempts(); len(as) != 2 || as[0].GetBuilder() != "local" || as[1].GetOutcome() != "build_failed" || as[0].GetHolder() == "" {
		t.Fatalf("bad's attempts = %v", as)
	}
	if len(bad.GetDependentDrvIds()) != 1 {
		t.Fatalf("bad's dependents = %v, want usesBad", bad.GetDependentDrvIds())
	}
	uses, err := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: bad.GetDependentDrvIds()[0]})
	if err != nil {
		t.Fatal(err)
	}
	if uses.GetDerivation().GetState() != "transitive-failure" || uses.GetRootCause().GetId() != badID || len(uses.GetDerivation().GetInputDrvIds()) != 1 {
		t.Fatalf("usesBad = %v, root cause %v", uses.GetDerivation(), uses.GetRootCause())
	}
	lf, err := c.ListFailures(ctx, &adminv1.ListFailuresRequest{JobsetId: jobsetID})
	if err != nil {
		t.Fatal(err)
	}
	if len(lf.GetGroups()) != 1 || lf.Groups[0].GetRoot().GetId() != badID || len(lf.Groups[0].GetAttrs()) != 2 {
		t.Fatalf("ListFailures = %v", lf)
	}
	if _, err := c.ListQueues(ctx, &adminv1.ListQueuesRequest{}); err != nil {
		t.Fatal(err)
	}
	lb, err := c.ListBuilders(ctx, &adminv1.ListBuildersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(lb.GetBuilders()) != 1 || lb.Builders[0].GetName() != "local" {
		t.Fatalf("ListBuilders = %v, want the local builder", lb)
	}

	// Auth and error codes over TCP.
	tcp := adminv1.NewAdminClient(h.tcp)
	tests := []struct {
		name  string
		call  func(ctx context.Context) error
		ctx   context.Context
		code  codes.Code
		field string
	}{
		{"read without a token", func(ctx context.Context) error {
			_, err := tcp.GetChange(ctx, &adminv1.GetChangeRequest{Id: changeID})
			return err
		}, ctx, codes.Unauthenticated, ""},
		{"read with the token", func(ctx context.Context) error {
			_, err := tcp.GetChange(ctx, &adminv1.GetChangeRequest{Id: changeID})
			return err
		}, withToken(ctx, adminToken), codes.OK, ""},
		{"act with a wrong token", func(ctx context.Context) error {
			_, err := tcp.Retry(ctx, &adminv1.RetryRequest{DrvId: badID})
			return err
		}, withToken(ctx, "guess"), codes.Unauthenticated, ""},
		{"unknown jobset", func(ctx context.Context) error {
			_, err := tcp.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: "nothere"})
			return err
		}, withToken(ctx, adminToken), codes.NotFound, ""},
		{"malformed derivation id", func(ctx context.Context) error {
			_, err := tcp.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: "a.b"})
			return err
		}, withToken(ctx, adminToken), codes.InvalidArgument, "id"},
		{"bad state filter", func(ctx context.Context) error {
			_, err := tcp.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: jobsetID, State: "melted"})
			return err
		}, withToken(ctx, adminToken), codes.InvalidArgument, "state"},
		{"bad page token", func(ctx context.Context) error {
			_, err := tcp.ListChanges(ctx, &adminv1.ListChangesRequest{PageToken: "x"})
			return err
		}, withToken(ctx, adminToken), codes.InvalidArgument, "page_token"},
		{"cancel a concluded jobset", func(ctx context.Context) error {
			_, err := tcp.CancelJobset(ctx, &adminv1.CancelJobsetRequest{Id: jobsetID})
			return err
		}, withToken(ctx, adminToken), codes.FailedPrecondition, ""},
		{"retry a success", func(ctx context.Context) error {
			_, err := tcp.Retry(ctx, &adminv1.RetryRequest{DrvId: slowID})
			return err
		}, withToken(ctx, adminToken), codes.FailedPrecondition, ""},
		{"a log of an attempt never made", func(ctx context.Context) error {
			s, err := tcp.TailLog(ctx, &adminv1.TailLogRequest{DrvId: badID, Attempt: 9})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, withToken(ctx, adminToken), codes.NotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.ctx)
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code %v (%v), want %v", st.Code(), err, tt.code)
			}
			if tt.field == "" {
				return
			}
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 && br.FieldViolations[0].GetField() == tt.field {
					return
				}
			}
			t.Fatalf("%v names no field %q", err, tt.field)
		})
	}

	// Health and reflection.
	hc, err := healthpb.NewHealthClient(h.tcp).Check(ctx, &healthpb.HealthCheckRequest{Service: "ekaci.admin.v1.Admin"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}
	rs, err := reflectpb.NewServerReflectionClient(h.tcp).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(rr.GetListServicesResponse()), "ekaci.admin.v1.Admin") {
		t.Fatalf("reflection lists %v", rr.GetListServicesResponse())
	}
	rs.CloseSend()

	// HTTP logs.
	base := "http://" + h.lis.HTTPAddr
	for _, tt := range []struct {
		path string
		code int
		body string
	}{
		{"/logs/" + badID, 200, "nope"},
		{"/logs/" + badID + "/1", 200, "nope"},
		{"/logs/" + slowID + "?follow=1", 200, "line 6"},
		{"/logs/" + badID + "/9", 404, ""},
		{"/logs/0000000000000000000000000000dead", 404, ""},
		{"/logs/" + badID + "/one", 400, ""},
		{"/logs/..%2F..%2Fetc%2Fpasswd", 400, ""},
		{"/logs/../../etc/passwd", 400, ""},
		{"/logs/%2e%2e/1", 400, ""},
		{"/logs/" + badID + "/1/extra", 400, ""},
		{"/logs/" + badID + "?follow=maybe", 400, ""},
	} {
		t.Run("http "+tt.path, func(t *testing.T) {
			code, body := rawGet(t, h.lis.HTTPAddr, tt.path)
			if code != tt.code || !strings.Contains(body, tt.body) || strings.Contains(body, "root:") {
				t.Fatalf("GET %s%s = %d %q, want %d with %q", base, tt.path, code, body, tt.code, tt.body)
			}
		})
	}

	// A read model rebuilt from the log answers as the live one.
	rebuilt := rebuildAdminModel(t, ctx, h.app.Events(), last)
	compare := func(name string, live, again proto.Message, err1, err2 error) {
		t.Helper()
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: live %v, rebuilt %v", name, err1, err2)
		}
		if !proto.Equal(live, again) {
			t.Fatalf("%s differs:\nlive    %v\nrebuilt %v", name, live, again)
		}
	}
	l1, e1 := c.ListChanges(ctx, &adminv1.ListChangesRequest{})
	l2, e2 := rebuilt.ListChanges(&adminv1.ListChangesRequest{})
	compare("ListChanges", l1, l2, e1, e2)
	g1, e1 := c.GetChange(ctx, &adminv1.GetChangeRequest{Id: changeID})
	g2, e2 := rebuilt.GetChange(changeID)
	compare("GetChange", g1, g2, e1, e2)
	j1, e1 := c.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: jobsetID})
	j2, e2 := rebuilt.GetJobset(jobsetID, "")
	compare("GetJobset", j1, j2, e1, e2)
	f1, e1 := c.ListFailures(ctx, &adminv1.ListFailuresRequest{JobsetId: jobsetID})
	f2, e2 := rebuilt.ListFailures(jobsetID)
	compare("ListFailures", f1, f2, e1, e2)
	for _, a := range j1.GetAttrs() {
		d1, e1 := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: a.GetDrvId()})
		d2, e2 := rebuilt.GetDerivation(a.GetDrvId())
		compare("GetDerivation "+a.GetAttr(), d1, d2, e1, e2)
	}
	// The same through the API: RebuildReadModel swaps a model rebuilt
	// beside the live one (on the process's shared feed) in; it answers as
	// the live one did, and goes on folding (the retry below reads from it).
	rb, err := c.RebuildReadModel(ctx, &adminv1.RebuildReadModelRequest{Name: admin.ReadModel})
	if err != nil || rb.GetPosition() < last {
		t.Fatalf("RebuildReadModel = %v, %v; want it past %d", rb, err, last)
	}
	l3, e3 := c.ListChanges(ctx, &adminv1.ListChangesRequest{})
	compare("ListChanges after RebuildReadModel", l1, l3, e1, e3)
	g3, e3 := c.GetChange(ctx, &adminv1.GetChangeRequest{Id: changeID})
	compare("GetChange after RebuildReadModel", g1, g3, e1, e3)
	j3, e3 := c.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: jobsetID})
	compare("GetJobset after RebuildReadModel", j1, j3, e1, e3)
	f3, e3 := c.ListFailures(ctx, &adminv1.ListFailuresRequest{JobsetId: jobsetID})
	compare("ListFailures after RebuildReadModel", f1, f3, e1, e3)
	for _, a := range j1.GetAttrs() {
		d2, e2 := rebuilt.GetDerivation(a.GetDrvId())
		d3, e3 := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: a.GetDrvId()})
		compare("GetDerivation after RebuildReadModel "+a.GetAttr(), d2, d3, e2, e3)
	}

	// An action, and the read that follows it, over the unix socket
	// without a token; the actor is recorded.
	actx := metadata.AppendToOutgoingContext(ctx, admin.ActorHeader, "alice")
	rr2, err := c.Retry(actx, &adminv1.RetryRequest{DrvId: badID, Reason: "flaky?"})
	if err != nil {
		t.Fatal(err)
	}
	after, err := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: badID, AfterSeq: rr2.GetAction().GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	var requeue *adminv1.Transition
	for _, tr := range after.GetHistory() {
		if tr.GetSeq() == rr2.GetAction().GetSeq() {
			requeue = tr
		}
	}
	if requeue == nil || requeue.GetFact() != "requeued" || requeue.GetActor().GetWho() != "unix:alice" || requeue.GetActor().GetReason() != "flaky?" {
		t.Fatalf("the retry's transition = %v, want requeued by unix:alice", requeue)
	}
	// It fails again (it always does), and usesBad follows it there.
	natstest.Eventually(t, 2*time.Minute, func() bool {
		d, err := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: badID})
		u, err2 := c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: uses.GetDerivation().GetId()})
		return err == nil && err2 == nil && d.GetDerivation().GetState() == "failed" && len(d.GetDerivation().GetAttempts()) == 4 &&
			u.GetDerivation().GetState() == "transitive-failure" && len(u.GetHistory()) > len(uses.GetHistory())
	}, "bad fails again after the retry, usesBad with it")
}

// rawGet sends path as written (no client-side cleaning) and returns the
// status and body.
func rawGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// rebuildAdminModel folds the log into a new admin model up to seq.
func rebuildAdminModel(t *testing.T, ctx context.Context, log *eventlog.Log, seq uint64) *admin.Reads {
	t.Helper()
	db, err := projection.Open(filepath.Join(t.TempDir(), "admin.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := projection.New(db, log, admin.NewModel(zerologNop()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = r.Run(rctx) }()
	t.Cleanup(func() { stop(); wg.Wait() })
	if err := r.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	return admin.NewReads(db)
}

func zerologNop() zerolog.Logger { return zerolog.Nop() }
