// Command ekaci-bench runs ekaci's benchmarks (make bench): each scenario
// in a process of its own, so each has its own peak memory, and prints one
// table of figures next to their baselines measured in the same run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/ekaci/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	scenario string
	n        int
	closureN int
	realN    int
	sample   int
	out      string
	cpuprof  string
	memprof  string
	trace    bool
	memLimit int
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("ekaci-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.scenario, "scenario", "", "run one scenario and print its result as JSON (used by the parent run)")
	fs.IntVar(&o.n, "n", 100000, "derivations for the ingest, schedule and propagation scenarios")
	fs.IntVar(&o.closureN, "closure-n", 2000, "derivations of the real graph whose .drv files are read")
	fs.IntVar(&o.realN, "real-n", 500, "derivations of the graph built for real")
	fs.IntVar(&o.sample, "sample", 200, "derivations timed one `nix show-derivation` process each")
	fs.StringVar(&o.out, "out", "", "also write the table (markdown) to this file")
	fs.StringVar(&o.memprof, "memprofile", "", "with -scenario: write a heap profile here when it ends, before it stops (go tool pprof)")
	fs.BoolVar(&o.trace, "trace", false, "with -scenario propagate: print progress every 250 ms to stderr (history: each change)")
	fs.IntVar(&o.memLimit, "memory-limit-mib", service.DefaultMemoryLimitMiB, "the soft memory limit each scenario's process runs under, as the all-in-one's default (0: none)")
	fs.StringVar(&o.cpuprof, "cpuprofile", "", "with -scenario: write a CPU profile of it here (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.scenario != "" {
		return child(o, stdout, stderr)
	}
	return parent(o, stdout, stderr)
}

func child(o options, stdout, stderr io.Writer) int {
	// The scenarios run the stages as the all-in-one does: under its memory limit.
	service.SetMemoryLimit(o.memLimit)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "ekaci-bench-")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if o.cpuprof != "" {
		f, err := os.Create(o.cpuprof)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if o.trace {
		bench.Trace = stderr
	}
	if o.memprof != "" {
		bench.AtEnd = func() {
			f, err := os.Create(o.memprof)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return
			}
			defer f.Close()
			_ = pprof.WriteHeapProfile(f)
		}
	}
	var res bench.Result
	switch o.scenario {
	case "ceiling":
		res, err = bench.Ceiling(ctx, dir, 200000)
	case "bolt":
		res, err = bench.BoltRate(dir, 1000000)
	case "schedule":
		res, err = bench.Schedule(ctx, dir, o.n, 1)
	case "propagate":
		res, err = bench.Propagate(ctx, dir, o.n, 1)
	case "closure":
		res, err = bench.Closure(ctx, dir, o.closureN, o.sample)
	case "real":
		res, err = bench.RealBuilds(ctx, dir, o.realN)
	case "history":
		res, err = bench.History(ctx, dir, o.n, 1)
	default:
		err = fmt.Errorf("unknown scenario %q", o.scenario)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ekaci-bench %s: %v\n", o.scenario, err)
		return 1
	}
	_ = json.NewEncoder(stdout).Encode(res)
	return 0
}

type measured struct {
	bench.Result
	rssMB float64
}

func parent(o options, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	results := map[string]measured{}
	for _, sc := range []string{"ceiling", "bolt", "schedule", "propagate", "closure", "real", "history"} {
		fmt.Fprintf(stderr, "ekaci-bench: %s ...\n", sc)
		cmd := exec.Command(self, "-scenario", sc, "-n", fmt.Sprint(o.n), "-closure-n", fmt.Sprint(o.closureN),
			"-real-n", fmt.Sprint(o.realN), "-sample", fmt.Sprint(o.sample), "-memory-limit-mib", fmt.Sprint(o.memLimit))
		cmd.Stderr = stderr
		out, err := cmd.Output()
		if err != nil {
			fmt.Fprintf(stderr, "ekaci-bench: %s failed: %v\n", sc, err)
			return 1
		}
		var r bench.Result
		if err := json.Unmarshal(out, &r); err != nil {
			fmt.Fprintf(stderr, "ekaci-bench: %s printed %q: %v\n", sc, out, err)
			return 1
		}
		rss := float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024 // KiB on Linux
		results[sc] = measured{r, rss}
	}
	table := render(o, results)
	fmt.Fprint(stdout, table)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	return 0
}

func render(o options, r map[string]measured) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Measured %s on %s (%d CPUs, %s/%s), `make bench` (ekaci-bench -n %d -closure-n %d -real-n %d -sample %d).\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, o.n, o.closureN, o.realN, o.sample)
	b.WriteString("| measure | ekaci | baseline, same run | ratio | target | met | peak RSS |\n|---|---|---|---|---|---|---|\n")
	ceil, bolt, sched, prop, clo, real := r["ceiling"], r["bolt"], r["schedule"], r["propagate"], r["closure"], r["real"]
	perDrv := sched.Extra["msgs_per_drv"]
	ceilDrv := ceil.Rate / perDrv
	ok := func(b bool) string {
		if b {
			return "yes"
		}
		return "**no**"
	}
	row := func(measure, ekaci, base, ratio, target string, met bool, rss float64) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.0f MiB |\n", measure, ekaci, base, ratio, target, ok(met), rss)
	}
	fmt.Fprintf(&b, "| JetStream ceiling: async publish with msg id → acked pull consumer | %.0f msg/s | | | | | %.0f MiB |\n", ceil.Rate, ceil.rssMB)
	fmt.Fprintf(&b, "| bbolt batched writes (1,000 puts per fsynced tx) | %.0f puts/s | | | | | %.0f MiB |\n", bolt.Rate, bolt.rssMB)
	ingest := sched.Extra["ingest_s"]
	row(fmt.Sprintf("ingest: %d drvs + %d edges discovered → folded, roots Buildable", sched.N, sched.Edges),
		fmt.Sprintf("%.1f s (%.0f drv/s)", ingest, float64(sched.N)/ingest), "", "", "≤ 10 s", ingest <= 10, sched.rssMB)
	row(fmt.Sprintf("schedule: %d drvs Queued → Completed(Success), no-op builder", sched.N),
		fmt.Sprintf("%.1f s (%.0f drv/s)", sched.Seconds, sched.Rate),
		fmt.Sprintf("ceiling %.0f drv/s (%.0f msg/s ÷ %.1f msgs/drv)", ceilDrv, ceil.Rate, perDrv),
		fmt.Sprintf("%.0f%%", 100*sched.Rate/ceilDrv), "≤ 30 s and ≥ 30%", sched.Seconds <= 30 && sched.Rate/ceilDrv >= 0.3, sched.rssMB)
	row(fmt.Sprintf("failure propagation: 1 root fails, %.0f drvs downstream → TransitiveFailure", prop.Extra["downstream"]),
		fmt.Sprintf("%.2f s", prop.Seconds), "", "", "≤ 2 s, ≥ 50,000 downstream", prop.Seconds <= 2 && prop.Extra["downstream"] >= 50000, prop.rssMB)
	row(fmt.Sprintf("closure discovery: %d real .drv files, %d edges", clo.N, clo.Edges),
		fmt.Sprintf("%.0f drv/s", clo.Rate),
		fmt.Sprintf("`nix show-derivation -r`: %.0f drv/s; one process per drv: %.0f drv/s", clo.Extra["recursive_drv_per_s"], clo.Extra["per_process_drv_per_s"]),
		fmt.Sprintf("%.1f× / %.0f×", clo.Rate/clo.Extra["recursive_drv_per_s"], clo.Rate/clo.Extra["per_process_drv_per_s"]),
		"≥ 5× `-r` and ≥ 20,000 drv/s", clo.Rate >= 5*clo.Extra["recursive_drv_per_s"] && clo.Rate >= 20000, clo.rssMB)
	row(fmt.Sprintf("real builds: %d-drv graph, `ekaci run` path vs one `nix-build --keep-going -j2`", real.N),
		fmt.Sprintf("%.1f s", real.Seconds), fmt.Sprintf("%.1f s", real.Extra["nix_build_s"]),
		fmt.Sprintf("%.2f×", real.Seconds/real.Extra["nix_build_s"]), "≤ 1.3×, store checks included", real.Seconds <= 1.3*real.Extra["nix_build_s"], real.rssMB)
	row(fmt.Sprintf("real builds: the store checks, per Nix invocation (%.0f invocations, %.0f validity questions)", real.Extra["invocations"], real.Extra["validity_questions"]),
		fmt.Sprintf("validity %.1f ms, GC roots %.1f ms", real.Extra["validity_ms_per_invocation"], real.Extra["roots_ms_per_invocation"]),
		fmt.Sprintf("in all: validity %.2f s, roots %.2f s", real.Extra["validity_s"], real.Extra["roots_s"]), "", "(reported)", true, real.rssMB)
	hist := r["history"]
	tRatio, mRatio := hist.Extra["last_s"]/hist.Extra["first_s"], hist.Extra["last_rss_mib"]/hist.Extra["first_rss_mib"]
	row(fmt.Sprintf("history: %d changes of %d drvs, each 95%% shared with the one before, one data dir: the last vs the first", bench.HistoryChanges, hist.N),
		fmt.Sprintf("%.1f s, peak %.0f MiB (live heap after it %.0f MiB)", hist.Extra["last_s"], hist.Extra["last_rss_mib"], hist.Extra["last_heap_mib"]),
		fmt.Sprintf("first: %.1f s, peak %.0f MiB (live heap after it %.0f MiB)", hist.Extra["first_s"], hist.Extra["first_rss_mib"], hist.Extra["first_heap_mib"]),
		fmt.Sprintf("%.2f× / %.2f×", tRatio, mRatio), "≤ 1.2× time and peak RSS", tRatio <= 1.2 && mRatio <= 1.2, hist.rssMB)
	row(fmt.Sprintf("start-up after the %d changes: restart on the data dir until a one-derivation change concludes", bench.HistoryChanges),
		fmt.Sprintf("%.2f s", hist.Extra["startup_s"]), fmt.Sprintf("the embedded nats-server's restart alone: %.2f s", hist.Extra["startup_server_s"]), "", "≤ 2 s", hist.Extra["startup_s"] <= 2, hist.rssMB)
	peak := max(sched.rssMB, prop.rssMB)
	row(fmt.Sprintf("peak RSS of the all-in-one at %d drvs (ingest, schedule, propagation; soft memory limit %d MiB)", sched.N, o.memLimit),
		fmt.Sprintf("%.0f MiB", peak), "", "", "≤ 1 GiB", peak <= 1024, peak)
	b.WriteString("\nPeak RSS is each scenario's whole process: the embedded nats-server, every stage, and the generated graph held by the benchmark itself.\n")
	return b.String()
}
