// Command ekaci-checker is a checker on its own: on any machine with Nix,
// bubblewrap and a route to NATS (and the git volume the gitter writes),
// it runs the queued checks in their sandbox. It runs as root, to give
// each check a uid of its own.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ekaci/ekaci/libs/binarycache"
	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/logretention"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/checker"
)

func main() {
	fs := flag.NewFlagSet("ekaci-checker", flag.ContinueOnError)
	host, _ := os.Hostname()
	name := fs.String("name", host, "this checker's name, recorded on each check it starts")
	var nixOpts flagenv.Pairs
	fs.Var(&nixOpts, "nix-option", "a Nix option for nix-store queries, name=value (repeatable)")
	hostPaths := flagenv.List(checker.DefaultHostPaths)
	fs.Var(&hostPaths, "host-paths", "comma-separated host directories a check sees read-only (its shell and tools where packages do not provide them)")
	maxJobs := fs.Int("max-jobs", 2, "checks run at once")
	uidBase := fs.Int("uid-base", 61000, "checks run as uids uid-base .. uid-base+max-jobs-1, which nothing else may use")
	maxTimeout := fs.Duration("max-timeout", time.Hour, "the longest a check may run, whatever its timeout_seconds")
	memMiB := fs.Int64("memory-mib", 2048, "each check's memory")
	procs := fs.Int("processes", 512, "each check's processes (and threads)")
	outMiB := fs.Int64("output-mib", 64, "each check's output, past which it is stopped")
	filesMiB := fs.Int64("files-mib", 1024, "bytes each check may write, its checkout included")
	files := fs.Int64("files", 100_000, "files each check may create, its checkout included")
	logDir := fs.String("log-dir", "/var/lib/ekaci/logs", "where each run's compressed log is kept")
	logMaxAge := fs.Duration("log-max-age", logretention.DefaultMaxAge, "delete logs under --log-dir last written longer ago than this")
	logMaxMiB := fs.Int64("log-max-mib", logretention.DefaultMaxBytes>>20, "bound the logs under --log-dir to this many MiB, oldest first")
	stateDir := fs.String("state-dir", "/var/lib/ekaci/checker", "the sandboxes' directories (locked while it runs)")
	cacheURL := fs.String("cache", "", "the mesh's binary cache (ekaci-cache, e.g. http://cache:8081): the checks' packages are fetched from it, for a checker with a Nix store of its own (empty: the store is shared with the builders)")
	mountProc := fs.Bool("mount-proc", false, "mount a proc filesystem of its own over /proc at start: in a container, whose runtime masks /proc, bubblewrap cannot give a check one otherwise (needs CAP_SYS_ADMIN; never on a host: see README, \"Running as a mesh\")")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		if *logMaxAge <= 0 || *logMaxMiB <= 0 {
			return fmt.Errorf("--log-max-age %v, --log-max-mib %d: want both above 0", *logMaxAge, *logMaxMiB)
		}
		unlock, err := service.Lock(*stateDir)
		if err != nil {
			return err
		}
		defer unlock()
		var cache *binarycache.Cache
		if *cacheURL != "" {
			cache = &binarycache.Cache{URL: *cacheURL, NixOptions: nixOpts}
		}
		go func() {
			_ = logretention.New(logretention.Config{Dir: *logDir, MaxAge: *logMaxAge, MaxBytes: *logMaxMiB << 20, Logger: env.Logger}).Run(ctx)
		}()
		return checker.Run(ctx, checker.Config{
			Events: env.Events, Conn: env.Conn, Logger: env.Logger, Metrics: env.Metrics, Name: *name,
			CheckLogDir: *logDir, StateDir: *stateDir, MaxJobs: *maxJobs, UIDBase: *uidBase, HostPaths: hostPaths, NixOptions: nixOpts,
			Cache: cache, MountProc: *mountProc,
			Limits: checker.Limits{MaxTimeout: *maxTimeout, MemoryBytes: *memMiB << 20, Processes: *procs, OutputBytes: *outMiB << 20, FilesBytes: *filesMiB << 20, Files: *files},
		})
	}))
}
