// Command ekaci-bench-mesh runs the schedule benchmark through the mesh
// (make bench-mesh): a three-node R3 JetStream cluster from deploy/nats as
// nats-server processes on loopback, every stage a process of its own with
// the no-op builder, next to the same cluster's ceiling measured in the
// same run. It prints one table.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ekaci/ekaci/services/ekaci/internal/benchmesh"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ekaci-bench-mesh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := benchmesh.Config{Seed: 1}
	fs.StringVar(&cfg.Bin, "bin", "bin", "directory holding nats-server and ekaci-ingress, ekaci-router, ekaci-builder, ekaci-recorder")
	fs.StringVar(&cfg.NATSConf, "nats-conf", "deploy/nats", "directory holding the cluster's nats-1.conf, nats-2.conf, nats-3.conf")
	fs.IntVar(&cfg.N, "n", 100000, "derivations scheduled")
	fs.IntVar(&cfg.CeilingN, "ceiling-n", 200000, "messages published and consumed for the ceiling")
	keep := fs.Bool("keep", false, "keep the run's directory (stores, data, every process's log) and print where it is")
	out := fs.String("out", "", "also write the table (markdown) to this file")
	timeout := fs.Duration("timeout", time.Hour, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "ekaci-bench-mesh-")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *keep {
		fmt.Fprintf(stderr, "ekaci-bench-mesh: keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	cfg.Dir = dir
	cfg.Progress = func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s ekaci-bench-mesh: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	res, err := benchmesh.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "ekaci-bench-mesh: %v\n", err)
		if !*keep {
			fmt.Fprintln(stderr, "ekaci-bench-mesh: run with -keep to keep every process's log")
		}
		return 1
	}
	table := render(args, res)
	fmt.Fprint(stdout, table)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	return 0
}

func render(args []string, r benchmesh.Result) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Measured %s on %s (%d CPUs, %s/%s), `ekaci-bench-mesh %s`, %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH,
		strings.Join(args, " "), r.NATSVersion)
	b.WriteString("| measure | figure | load average (1 min) |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| schedule: %d drvs (%d edges) Queued → Completed(Success), no-op builder, every stage a process, R3 | %.1f s (%.0f drv/s) | %.2f before, %.2f after |\n",
		r.N, r.Edges, r.Seconds, r.Rate, r.LoadBefore, r.LoadAfterSchedule)
	fmt.Fprintf(&b, "| ceiling: async publish with msg id → acked pull consumer, R3 stream, %.0f copies of 1,000 sampled events (mean payload %.0f B, headers %.0f B) | %.0f msg/s | %.2f after |\n",
		r.CeilingN, r.MeanData, r.MeanHeader, r.CeilingRate, r.LoadAfterCeiling)
	met := "**no**"
	if r.Ratio >= 0.2 {
		met = "yes"
	}
	fmt.Fprintf(&b, "| ratio: schedule ÷ ceiling per drv (%.0f msg/s ÷ %.1f msgs/drv = %.0f drv/s) | %.0f%% (target ≥ 20%%: %s) | |\n",
		r.CeilingRate, r.MsgsPerDrv, r.CeilingDrvRate, 100*r.Ratio, met)
	names := make([]string, 0, len(r.CPU))
	total := 0.0
	for name, s := range r.CPU {
		names = append(names, name)
		total += s
	}
	slices.Sort(names)
	b.WriteString("\nCPU seconds during the schedule, per process (\"bench\" discovers and counts):")
	for _, name := range names {
		fmt.Fprintf(&b, " %s %.1f;", name, r.CPU[name])
	}
	fmt.Fprintf(&b, " in all %.1f of the %.1f s × %d CPUs. The stages pulled %.1f s after they started, before the schedule's clock started.\n",
		total, r.Seconds, runtime.NumCPU(), r.StartSeconds)
	return b.String()
}
