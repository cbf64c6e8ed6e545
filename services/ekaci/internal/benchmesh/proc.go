package benchmesh

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one process of the mesh (a nats-server node or a stage), its
// output kept in a file of its own.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once it exited
	err  error         // why it exited; read after done
	// stopping is set before a deliberate stop, so its exit is not a
	// failure of the run.
	stopping atomic.Bool
}

// start runs bin with args, its stdout and stderr in dir/name.log. When it
// exits before stop is called, exited is called with why (the run stops).
func start(dir, name, bin string, args []string, exited func(error)) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Only what the flags say: no EKACI_* from the caller's environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EKACI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
		if !p.stopping.Load() {
			exited(fmt.Errorf("%s exited during the run (%v); its log ends:\n%s", name, p.err, tail(logPath, 20)))
		}
	}()
	return p, nil
}

// stop sends SIGTERM and waits for the exit, SIGKILL after grace.
func (p *proc) stop(grace time.Duration) error {
	p.stopping.Store(true)
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM (killed)", p.name, grace)
	}
}

func (p *proc) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("%s: %w; its log ends:\n%s", p.name, p.err, tail(p.log, 20))
	}
	return nil
}

// cpuSeconds is the CPU time (user and system) the process has used so
// far, from /proc (0 once it exited).
func (p *proc) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	return statCPU(b)
}

// statCPU is the user and system time in a /proc/<pid>/stat, in seconds.
func statCPU(b []byte) float64 {
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat times: 100
// on every architecture Go supports there.
const clockTicks = 100

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// freePorts reserves n distinct free loopback ports and releases them for
// the processes to listen on: a node's routes must name its peers' ports
// before they start.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// loadAvg is the 1-minute load average (/proc/loadavg), -1 when unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// poll calls cond every interval until it returns true or an error, or
// ctx ends (the error then says what was awaited and cond's last error).
func poll(ctx context.Context, what string, interval time.Duration, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (last error: %v): %w", what, last, context.Cause(ctx))
		case <-time.After(interval):
		}
	}
}
