//go:build linux

package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// RingSize caps the in-memory output of a process started without LogDir;
	// older output is discarded.
	RingSize = 1 << 20

	// execWaitDelay bounds how long Wait waits for output pipes held open by
	// children of an exited process.
	execWaitDelay = 2 * time.Second
)

var procSeq atomic.Uint64

// ProcConfig describes a long-running program to start in a host namespace.
type ProcConfig struct {
	// Path is the program; a name without '/' is looked up in PATH.
	Path string
	// Args are the program's arguments (without the program name).
	Args []string
	// Env entries are added to the test process's environment (later
	// entries win). nil inherits the environment unchanged.
	Env []string
	// LogDir, if set, receives stdout+stderr in the file
	// <LogDir>/<host>-<Name>-<seq>.log (the directory is created). If empty,
	// output goes to an in-memory ring buffer holding the last RingSize bytes.
	LogDir string
	// Name is used in log file names and messages; default: base of Path.
	Name string
}

// Proc is a program running in a host namespace. Its pid is the program's own
// pid (ip netns exec execs the program without forking), so signals reach
// the program directly. The program runs in its own process group and gets
// SIGKILL if the test process dies (PR_SET_PDEATHSIG).
type Proc struct {
	name    string
	host    *Host
	cmd     *exec.Cmd
	pid     int
	logPath string
	ring    *ring
	done    chan struct{}
	exitErr error // written before done is closed
}

// Start runs cfg.Path inside the host namespace with
// `ip netns exec NS path args...`. ctx only bounds starting: the process
// runs until it exits, Stop or Kill, or Lab.Close. One goroutine per process
// waits for it and closes Done.
func (h *Host) Start(ctx context.Context, cfg ProcConfig) (*Proc, error) {
	if cfg.Path == "" {
		return nil, errors.New("lab: Start: empty Path")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !strings.Contains(cfg.Path, "/") {
		if _, err := exec.LookPath(cfg.Path); err != nil {
			return nil, fmt.Errorf("lab: Start: %w", err)
		}
	}
	name := cfg.Name
	if name == "" {
		name = filepath.Base(cfg.Path)
	}
	l := h.lab
	if err := l.begin(); err != nil {
		return nil, err
	}
	defer l.end()

	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, cfg.Path}, cfg.Args...)...)
	if cfg.Env != nil {
		cmd.Env = append(os.Environ(), cfg.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = execWaitDelay
	p := &Proc{name: name, host: h, cmd: cmd, done: make(chan struct{})}
	var logFile *os.File
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("lab: Start: %w", err)
		}
		p.logPath = filepath.Join(cfg.LogDir, fmt.Sprintf("%s-%s-%d.log", h.Name, name, procSeq.Add(1)))
		f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lab: Start: %w", err)
		}
		logFile = f
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		p.ring = &ring{}
		cmd.Stdout, cmd.Stderr = p.ring, p.ring
	}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("lab: Start %s on %s: %w", name, h.Name, err)
	}
	p.pid = cmd.Process.Pid
	l.mu.Lock()
	l.procs[p] = struct{}{}
	l.mu.Unlock()
	go p.wait(logFile)
	return p, nil
}

// wait is the one goroutine per process; it ends when the process has exited.
func (p *Proc) wait(logFile *os.File) {
	err := p.cmd.Wait()
	if logFile != nil {
		logFile.Close()
	}
	if err != nil {
		p.exitErr = fmt.Errorf("lab: %s: %w", p, err)
	}
	close(p.done)
	l := p.host.lab
	l.mu.Lock()
	delete(l.procs, p)
	l.mu.Unlock()
}

func (p *Proc) String() string {
	return fmt.Sprintf("%s on %s (pid %d)", p.name, p.host.Name, p.pid)
}

// Pid returns the program's pid.
func (p *Proc) Pid() int { return p.pid }

// LogPath returns the log file ("" when output goes to the ring buffer).
func (p *Proc) LogPath() string { return p.logPath }

// Signal sends sig to the program. After the program has exited it returns
// os.ErrProcessDone.
func (p *Proc) Signal(sig os.Signal) error {
	p.host.lab.logf("lab: fault: signal %v to %s", sig, p)
	return p.signal(sig)
}

func (p *Proc) signal(sig os.Signal) error {
	err := p.cmd.Process.Signal(sig)
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("lab: signal %v to %s: %w", sig, p, err)
	}
	return err
}

// Stop sends SIGTERM (and SIGCONT, so a paused program handles it) and waits
// for the program to exit. If ctx ends first, the program is SIGKILLed and an
// error is returned. Otherwise Stop returns nil if the program exited with
// status 0, else an error carrying the exit status (an *exec.ExitError in
// the chain). Stopping an exited program returns its ExitErr.
func (p *Proc) Stop(ctx context.Context) error {
	select {
	case <-p.done:
		return p.exitErr
	default:
	}
	p.host.lab.logf("lab: fault: stop (SIGTERM) %s", p)
	if err := p.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	_ = p.signal(syscall.SIGCONT)
	select {
	case <-p.done:
		return p.exitErr
	case <-ctx.Done():
	}
	p.host.lab.logf("lab: %s ignored SIGTERM; killing it", p)
	if err := p.sigkill(); err != nil {
		return err
	}
	<-p.done
	return fmt.Errorf("lab: %s did not exit after SIGTERM (%w); killed", p, ctx.Err())
}

// Kill sends SIGKILL to the program (and its process group) and waits for it
// to exit. It returns nil once the program is gone, also if it had already
// exited.
func (p *Proc) Kill() error {
	p.host.lab.logf("lab: fault: kill (SIGKILL) %s", p)
	if err := p.sigkill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// sigkill SIGKILLs the process group and the process unless it was reaped.
func (p *Proc) sigkill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	// The group is killed while the leader is not yet known to be reaped,
	// so its id cannot have been reused.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	if err := p.signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Pause stops the program with SIGSTOP (state 'T' in /proc/PID/stat once
// delivered).
func (p *Proc) Pause() error {
	p.host.lab.logf("lab: fault: pause (SIGSTOP) %s", p)
	return p.signal(syscall.SIGSTOP)
}

// Resume continues a paused program with SIGCONT.
func (p *Proc) Resume() error {
	p.host.lab.logf("lab: fault: resume (SIGCONT) %s", p)
	return p.signal(syscall.SIGCONT)
}

// Done is closed when the program has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitErr returns, after Done is closed, nil if the program exited with
// status 0, else the error (wrapping an *exec.ExitError; "signal: killed"
// etc.). Before Done is closed it returns nil.
func (p *Proc) ExitErr() error {
	select {
	case <-p.done:
		return p.exitErr
	default:
		return nil
	}
}

// Output returns what the program has printed so far (stdout and stderr
// interleaved): the log file's content, or the ring buffer's (the last
// RingSize bytes).
func (p *Proc) Output() string {
	if p.ring != nil {
		return p.ring.String()
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("<lab: reading %s: %v>", p.logPath, err)
	}
	return string(b)
}

// ring keeps the last RingSize bytes written to it (a circular buffer).
type ring struct {
	mu    sync.Mutex
	buf   []byte // allocated on first write, RingSize long
	start int    // index of the oldest byte
	n     int    // bytes held
	total int64  // bytes ever written
}

func (r *ring) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	written := len(b)
	r.total += int64(written)
	if r.buf == nil {
		r.buf = make([]byte, RingSize)
	}
	if len(b) > RingSize {
		b = b[len(b)-RingSize:]
	}
	for len(b) > 0 {
		end := (r.start + r.n) % RingSize
		c := copy(r.buf[end:], b)
		if r.n+c > RingSize { // overwrote the oldest bytes
			over := r.n + c - RingSize
			r.start = (r.start + over) % RingSize
			r.n -= over
		}
		r.n += c
		b = b[c:]
	}
	return written, nil
}

func (r *ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sb strings.Builder
	if dropped := r.total - int64(r.n); dropped > 0 {
		fmt.Fprintf(&sb, "[lab: %d earlier bytes dropped]\n", dropped)
	}
	first := min(r.n, RingSize-r.start)
	sb.Write(r.buf[r.start : r.start+first])
	sb.Write(r.buf[:r.n-first])
	return sb.String()
}

// RSS returns the program's resident set size in bytes (VmRSS of
// /proc/PID/status).
func (p *Proc) RSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", p.pid, rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", p.pid)
}
