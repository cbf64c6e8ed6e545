package nixbuild

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Nix's activity and result types (libutil/logging.hh, 2.8).
const (
	actBuild           = 105
	actBuilds          = 104
	resBuildLogLine    = 101
	resProgress        = 105
	resPostBuildLogLog = 107
)

// hungGrace is how much longer than the no-output timeout a whole Nix
// invocation may print nothing before ekaci stops it: Nix enforces the
// timeout per build itself, so silence this long means Nix itself is stuck
// (a lock, a store that does not answer).
var hungGrace = 2 * time.Minute

// otherKeep is how many of Nix's unattributed messages an invocation keeps
// (for the detail of a derivation Nix did not build).
const otherKeep = 20

// job is one derivation across the invocations of one Realise.
type job struct {
	Job
	outputs  []string // output paths, sorted by output name
	drvValid bool
	log      *jobLog
	verdict  *Verdict
	result   *Result   // set once finished (early when judged mid-batch)
	aborted  int       // alone invocations that ended mid-build by themselves
	began    time.Time // its first build start
	took     time.Duration

	// The current invocation's record of it.
	act         int64
	started     bool
	overlapped  bool // another build started while it ran: its end is unknown
	startAt     time.Time
	lastSign    time.Time
	endAt       time.Time
	endKnown    bool
	countedDone bool
}

func (j *job) reset() {
	j.act, j.started, j.overlapped, j.endKnown, j.countedDone = 0, false, false, false, false
	j.startAt, j.lastSign, j.endAt = time.Time{}, time.Time{}, time.Time{}
}

// invocation is what one nix-store --realise showed.
type invocation struct {
	inv      Invocation
	cancelAt time.Time
	other    []string // Nix's messages no derivation claims (last otherKeep)
	elapsed  time.Duration
}

// nixEvent is one record of --log-format internal-json.
type nixEvent struct {
	Action string            `json:"action"`
	ID     int64             `json:"id"`
	Type   int               `json:"type"`
	Level  int               `json:"level"`
	Text   string            `json:"text"`
	Msg    string            `json:"msg"`
	RawMsg *string           `json:"raw_msg"` // only Nix's own error reports carry it
	Fields []json.RawMessage `json:"fields"`
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

func (o Options) realiseArgs(jobs []*job) []string {
	jobsN := 1 // one build at a time: each build's end is then Nix's to tell (see parser)
	if o.Builders != "" {
		jobsN = o.MaxJobs // 0 with remote machines: never build here
	}
	args := []string{"--realise", "--keep-going", "--log-format", "internal-json",
		"--builders", o.Builders, "--max-jobs", strconv.Itoa(jobsN)}
	if o.NoOutputTimeout > 0 {
		args = append(args, "--option", "max-silent-time", strconv.Itoa(wholeSeconds(o.NoOutputTimeout)))
	}
	if o.TotalTimeout > 0 {
		args = append(args, "--option", "timeout", strconv.Itoa(wholeSeconds(o.TotalTimeout)))
	}
	for i := 0; i+1 < len(o.NixOptions); i += 2 {
		args = append(args, "--option", o.NixOptions[i], o.NixOptions[i+1])
	}
	for _, j := range jobs {
		args = append(args, j.DrvPath)
	}
	return args
}

func wholeSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// invoke runs one `nix-store --realise` over jobs and records, per job,
// what Nix's own records say. It returns an error only when nothing could
// be started.
func invoke(ctx context.Context, bin string, jobs []*job, o Options, done func(*job, int)) (invocation, error) {
	res := invocation{inv: Invocation{Jobs: len(jobs), Exit: -1}}
	if o.NoOutputTimeout > 0 {
		res.inv.MaxSilent = time.Duration(wholeSeconds(o.NoOutputTimeout)) * time.Second
	}
	if o.TotalTimeout > 0 {
		res.inv.Timeout = time.Duration(wholeSeconds(o.TotalTimeout)) * time.Second
	}
	for _, j := range jobs {
		j.reset()
	}
	if ctx.Err() != nil {
		res.inv.Cancelled, res.cancelAt = true, time.Now()
		return res, nil
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return res, fmt.Errorf("pipe for nix-store: %w", err)
	}
	defer errR.Close()
	cmd := exec.Command(bin, o.realiseArgs(jobs)...) // not CommandContext: we stop the whole tree ourselves
	cmd.Stderr = errW
	cmd.Stdout = nil // output paths: validity is asked of the store instead
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If this process dies, nix-store gets SIGTERM and stops its
		// builders itself; whatever still survives, the next start of the
		// builder ends (see Tracker). Caveat: Linux sends it when the
		// thread that started the child exits; Go keeps its threads
		// unless a goroutine exits while locked to one, which we never do.
		Pdeathsig: syscall.SIGTERM,
	}
	oom := startOOMProbe()
	start := time.Now()
	err = cmd.Start()
	errW.Close()
	if err != nil {
		return res, fmt.Errorf("start nix-store --realise: %w", err)
	}
	pid := cmd.Process.Pid
	var tracked *trackedProc
	if o.Tracker != nil {
		tracked = o.Tracker.begin(pid, jobs)
	}

	p := &parser{byDrv: map[string]*job{}, byAct: map[int64]*job{}, jobs: jobs, done: done}
	for _, j := range jobs {
		p.byDrv[j.DrvPath] = j
	}
	var lastRecord atomic.Int64
	lastRecord.Store(start.UnixNano())
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		readRecords(errR, func(rec record) {
			lastRecord.Store(time.Now().UnixNano())
			p.record(rec, time.Now())
		})
	}()
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_ = cmd.Wait() // the verdict comes from ProcessState and the store
	}()

	sup := supervisor{o: o, pid: pid, waited: waited, lastRecord: &lastRecord, tracked: tracked}
	reason, cancelAt, groups := sup.run(ctx)
	res.elapsed = time.Since(start)
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if reason != None || ws.Signaled() {
		// Whatever Nix left behind goes now: the rest of its group and
		// the builder groups it started (each builder has a session of
		// its own, so it outlives a killed Nix).
		groups.kill(syscall.SIGKILL)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	// Drain what is left of stderr; a process that escaped with a copy of
	// the pipe only delays this by readerDrain.
	drain := time.NewTimer(readerDrain)
	select {
	case <-streamDone:
	case <-drain.C:
		_ = errR.SetReadDeadline(time.Now())
		<-streamDone
	}
	drain.Stop()
	if tracked != nil {
		tracked.end()
	}

	switch {
	case ws.Signaled():
		res.inv.Signal = ws.Signal()
	default:
		res.inv.Exit = ws.ExitStatus()
	}
	res.inv.Cancelled = reason == Cancelled
	res.inv.Hung = reason == Timeout
	res.cancelAt = cancelAt
	if res.inv.Signal == syscall.SIGKILL && reason == None {
		rose, known := oom.rose()
		res.inv.OOM = rose || !known
	}
	res.other = p.other
	return res, nil
}

// parser turns Nix's records into per-job facts. Only records Nix makes
// itself decide anything: a builder's "@nix" lines can start activities of
// the file-transfer type only, can put results only on those, and come
// out as plain messages otherwise (Nix's handleJSONLogMessage, untrusted).
type parser struct {
	jobs     []*job
	byDrv    map[string]*job
	byAct    map[int64]*job
	buildsID int64
	counters [4]int64 // done, expected, running, failed
	current  *job     // the build running now (max-jobs 1); nil: none or not ours
	other    []string
	done     func(*job, int) // a build of ours ended (with the batch size); nil: nothing to do
}

func (p *parser) record(rec record, now time.Time) {
	if rec.cut {
		// Only a build log line can be this long; anything else cut is
		// dropped (Nix's own records are short).
		id, typ, text, ok := cutResult(rec.data, rec.tail)
		if !ok {
			return
		}
		if j := p.byAct[id]; j != nil && (typ == resBuildLogLine || typ == resPostBuildLogLog) {
			j.lastSign = now
			j.log.line(text)
			j.log.line([]byte(fmt.Sprintf("[ekaci: the line above was %d bytes of Nix's log stream; only its first %d are kept]", rec.size, len(rec.data))))
		}
		return
	}
	rest, ok := bytes.CutPrefix(rec.data, []byte("@nix "))
	if !ok {
		p.note(string(rec.data))
		return
	}
	var ev nixEvent
	if json.Unmarshal(rest, &ev) != nil {
		return
	}
	switch ev.Action {
	case "start":
		switch ev.Type {
		case actBuilds:
			p.buildsID = ev.ID
		case actBuild:
			var drv string
			if len(ev.Fields) > 0 {
				_ = json.Unmarshal(ev.Fields[0], &drv)
			}
			if p.current != nil {
				p.current.overlapped = true // two at once: neither end is attributable
			}
			p.current = nil
			if j := p.byDrv[drv]; j != nil {
				p.byAct[ev.ID] = j
				j.act, j.started, j.startAt, j.lastSign = ev.ID, true, now, now
				if j.began.IsZero() {
					j.began = now
					if j.OnStart != nil {
						j.OnStart()
					}
				}
				p.current = j
				if ev.Text != "" {
					j.log.line([]byte(ev.Text))
				}
			}
		}
	case "result":
		if ev.ID == p.buildsID && ev.Type == resProgress {
			p.progress(ev.Fields, now)
			return
		}
		j := p.byAct[ev.ID]
		if j == nil {
			return
		}
		j.lastSign = now
		if (ev.Type == resBuildLogLine || ev.Type == resPostBuildLogLog) && len(ev.Fields) > 0 {
			var text string
			_ = json.Unmarshal(ev.Fields[0], &text)
			j.log.line([]byte(text))
		}
	case "msg":
		if ev.Level > 1 {
			return
		}
		msg := ansi.ReplaceAllString(ev.Msg, "")
		if ev.RawMsg != nil {
			// Nix's own error report (a builder's forged message never
			// carries raw_msg). It goes into the log of the one derivation
			// it names, for people to read; it decides nothing.
			if j := p.named(msg); j != nil {
				for _, l := range strings.Split(msg, "\n") {
					j.log.line([]byte(l))
				}
				return
			}
		}
		p.note(msg)
	}
}

// progress handles Nix's build counters. With one build at a time, a
// counter of done or failed builds that moves ends the build that runs.
func (p *parser) progress(fields []json.RawMessage, now time.Time) {
	var c [4]int64
	if len(fields) < 4 {
		return
	}
	for i := range c {
		if json.Unmarshal(fields[i], &c[i]) != nil {
			return
		}
	}
	done, failed := c[0] > p.counters[0], c[3] > p.counters[3]
	p.counters = c
	if !done && !failed {
		return
	}
	if j := p.current; j != nil && !j.overlapped && done != failed {
		j.endAt, j.endKnown, j.countedDone = now, true, done
		j.took += now.Sub(j.startAt)
		if p.done != nil {
			p.done(j, len(p.jobs))
		}
	}
	p.current = nil
}

// named returns the one job whose .drv or output path msg names.
func (p *parser) named(msg string) *job {
	var found *job
	for _, j := range p.jobs {
		hit := strings.Contains(msg, j.DrvPath)
		for _, out := range j.outputs {
			hit = hit || strings.Contains(msg, out)
		}
		if hit {
			if found != nil {
				return nil
			}
			found = j
		}
	}
	return found
}

func (p *parser) note(s string) {
	p.other = append(p.other, s)
	if len(p.other) > otherKeep {
		p.other = p.other[len(p.other)-otherKeep:]
	}
}

// observed is what the invocation and the store say about j.
func (j *job) observed(res invocation, invalid map[string]bool) Observed {
	o := Observed{DrvValid: j.drvValid, OutputsValid: len(j.outputs) > 0, Started: j.started, Aborted: j.aborted}
	for _, out := range j.outputs {
		if invalid[out] {
			o.OutputsValid = false
		}
	}
	if j.endKnown {
		o.Ended, o.CountedDone = true, j.countedDone
		o.EndedBeforeCancel = res.cancelAt.IsZero() || j.endAt.Before(res.cancelAt)
		o.Silence, o.Ran = j.endAt.Sub(j.lastSign), j.endAt.Sub(j.startAt)
	}
	return o
}

// supervisor waits for nix-store, stopping it and its builders on
// cancellation or when it hangs.
type supervisor struct {
	o          Options
	pid        int
	waited     <-chan struct{}
	lastRecord *atomic.Int64
	tracked    *trackedProc
}

func (s supervisor) run(ctx context.Context) (Interruption, time.Time, groupSet) {
	groups := groupSet{}
	reason := None
	var cancelAt time.Time
	var graceC <-chan time.Time
	tick := time.NewTicker(snapshotEvery)
	defer tick.Stop()
	snapshot := func() {
		groups.refresh(s.pid, s.pid)
		if s.tracked != nil {
			s.tracked.groups(groups)
		}
		if testHookSnapshot != nil {
			gs := make([]int, 0, len(groups))
			for g := range groups {
				gs = append(gs, g)
			}
			testHookSnapshot(gs)
		}
	}
	done := ctx.Done()
	stop := func(why Interruption) {
		select {
		case <-s.waited:
			return // it just exited on its own; that stands
		default:
		}
		reason, cancelAt, done = why, time.Now(), nil
		snapshot()
		// SIGTERM first: Nix then stops its builders itself.
		_ = syscall.Kill(-s.pid, syscall.SIGTERM)
		graceC = time.After(s.o.KillGrace)
	}
	for {
		select {
		case <-s.waited:
			return reason, cancelAt, groups
		case <-done:
			stop(Cancelled)
		case <-graceC:
			graceC = nil
			snapshot()
			groups.kill(syscall.SIGKILL)
			_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		case <-tick.C:
			snapshot()
			if reason == None && s.o.NoOutputTimeout > 0 &&
				time.Since(time.Unix(0, s.lastRecord.Load())) > s.o.NoOutputTimeout+hungGrace {
				stop(Timeout)
			}
		}
	}
}
