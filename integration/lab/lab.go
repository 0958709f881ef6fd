//go:build linux

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// netnsDir is where `ip netns` keeps its named namespaces.
	netnsDir = "/var/run/netns"

	// DefaultPrefix is the namespace name prefix used when Options.Prefix is empty.
	DefaultPrefix = "flk"

	// BridgeName is the bridge inside the bridge namespace.
	BridgeName = "br0"
	// HostIface is the name of every host's interface to the bridge.
	HostIface = "eth0"

	// MaxHosts is how many hosts one lab can hold (198.51.100.10 - .254).
	MaxHosts = 245

	// cleanupTimeout bounds every command Close and Cleanup run.
	cleanupTimeout = 30 * time.Second
	// killWaitTimeout bounds how long Close waits for one SIGKILLed process.
	killWaitTimeout = 30 * time.Second
)

// Subnet is the network all lab hosts live in (TEST-NET-2).
var Subnet = netip.MustParsePrefix("198.51.100.0/24")

// ErrClosed is returned by operations on a closed Lab.
var ErrClosed = errors.New("lab: closed")

var (
	labSeq   atomic.Uint64
	probeSeq atomic.Uint64
)

var availableOnce = sync.OnceValue(checkAvailable)

// Available reports why the lab cannot run here, or nil if it can: the
// process must be root, the ip and tc binaries must exist, and it must be
// possible to create (and delete) a network namespace. The result is computed
// once per process.
func Available() error { return availableOnce() }

func checkAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("lab: needs root (network namespaces)")
	}
	for _, bin := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("lab: %s (iproute2) not found: %w", bin, err)
		}
	}
	ns := fmt.Sprintf("%s%dx%dp", DefaultPrefix, os.Getpid(), probeSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if _, err := runCmd(ctx, "ip", "netns", "add", ns); err != nil {
		deleteNetns(ctx, ns) // in case it was half created
		return fmt.Errorf("lab: cannot create a network namespace: %w", err)
	}
	if err := deleteNetns(ctx, ns); err != nil {
		return fmt.Errorf("lab: cannot delete a network namespace: %w", err)
	}
	return nil
}

// Options configures a Lab.
type Options struct {
	// Prefix is the namespace name prefix; default "flk". It must consist of
	// ASCII letters, '-' or '_' only (no digits: the lab appends the pid).
	// Namespaces are named <Prefix><pid>x<lab>b for the bridge and
	// <Prefix><pid>x<lab>h<index> for hosts, so parallel test binaries and
	// several labs in one process never collide. Interface names never use
	// the prefix (br0, v<index>, eth0), so the 15-character limit is no issue.
	Prefix string
	// Logf, if set, receives one line for every fault the lab injects (link
	// down/up, loss, signals) and for lab setup/teardown.
	Logf func(format string, args ...any)
}

// Lab is a set of host namespaces connected by one bridge. All methods are
// safe for concurrent use.
type Lab struct {
	opts  Options
	base  string
	brNS  string
	ctx   context.Context // cancelled by Close; aborts in-flight commands
	stop  context.CancelFunc
	ops   sync.WaitGroup // in-flight operations (AddHost, Start, Exec, ...)
	loss  atomic.Int32   // lossMode
	nhost atomic.Int32   // next host index

	neighMu sync.Mutex // held while a host's neighbor entries are written

	mu         sync.Mutex
	closed     bool
	closeDone  chan struct{}
	closeErr   error
	namespaces []string        // every namespace the lab may have created, in creation order
	names      map[string]bool // host names taken (or being set up)
	hosts      []*Host
	procs      map[*Proc]struct{}
}

type lossMode = int32

const (
	lossUnknown lossMode = iota
	lossNetem            // tc netem qdisc
	lossBPF              // clsact + cls_bpf with a classic BPF random-drop program
)

var prefixRE = regexp.MustCompile(`^[A-Za-z_-]+$`)

func checkPrefix(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("lab: invalid prefix %q: use ASCII letters, '-' and '_' only", prefix)
	}
	return nil
}

// New creates the bridge namespace with the bridge br0 (up, multicast
// snooping off so multicast floods to every port) and lo up.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if err := checkPrefix(opts.Prefix); err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	base := fmt.Sprintf("%s%dx%d", opts.Prefix, os.Getpid(), labSeq.Add(1))
	lctx, stop := context.WithCancel(context.Background())
	l := &Lab{
		opts:      opts,
		base:      base,
		brNS:      base + "b",
		ctx:       lctx,
		stop:      stop,
		closeDone: make(chan struct{}),
		procs:     make(map[*Proc]struct{}),
		names:     make(map[string]bool),
	}
	if err := l.begin(); err != nil {
		return nil, err
	}
	err := l.setupBridge(ctx)
	l.end()
	if err != nil {
		return nil, errors.Join(err, l.Close())
	}
	l.logf("lab: created bridge namespace %s", l.brNS)
	return l, nil
}

func (l *Lab) setupBridge(ctx context.Context) error {
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	l.register(l.brNS)
	br := l.brNS
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", BridgeName, "type", "bridge"},
		{"-n", br, "link", "set", BridgeName, "type", "bridge", "mcast_snooping", "0"},
		{"-n", br, "link", "set", BridgeName, "up"},
	}
	for _, args := range steps {
		if _, err := runCmd(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// Flood makes the bridge a hub: it forwards every frame to every port, as
// if it had learned no address, so a host can capture the traffic between
// two others (an attacker on a shared segment).
func (l *Lab) Flood(ctx context.Context) error {
	if err := l.begin(); err != nil {
		return err
	}
	defer l.end()
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	_, err := runCmd(ctx, "ip", "-n", l.brNS, "link", "set", BridgeName, "type", "bridge", "ageing_time", "0")
	return err
}

// BridgeNS returns the name of the namespace holding br0 and the bridge-side
// veth ends (v<index>), e.g. for `ip netns exec NS tcpdump -i br0`.
func (l *Lab) BridgeNS() string { return l.brNS }

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

// begin registers an in-flight operation; Close waits for it.
func (l *Lab) begin() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.ops.Add(1)
	return nil
}

func (l *Lab) end() { l.ops.Done() }

// opCtx returns a context that is cancelled when ctx is or when the lab closes.
func (l *Lab) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(l.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (l *Lab) register(ns string) {
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
}

// AddHost creates a host: a new namespace with lo up and eth0 (address
// 198.51.100.(10+index)/24, up, plus a route 224.0.0.0/4 dev eth0), where
// eth0 is one end of a veth pair whose other end (v<index>) is attached to br0
// in the bridge namespace. Both ends are created directly inside their
// namespaces. index counts AddHost calls on this lab, starting at 0 (a failed
// AddHost uses up its index). Host names must be unique within the lab.
func (l *Lab) AddHost(ctx context.Context, name string) (*Host, error) {
	if name == "" {
		return nil, errors.New("lab: AddHost: empty host name")
	}
	if err := l.begin(); err != nil {
		return nil, err
	}
	defer l.end()

	l.mu.Lock()
	if l.names[name] {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: AddHost: duplicate host name %q", name)
	}
	l.names[name] = true
	l.mu.Unlock()
	idx := int(l.nhost.Add(1)) - 1
	if idx >= MaxHosts {
		l.releaseName(name)
		return nil, fmt.Errorf("lab: AddHost: too many hosts (max %d)", MaxHosts)
	}
	h := &Host{
		Name:   name,
		NS:     fmt.Sprintf("%sh%d", l.base, idx),
		IP:     netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + idx)}),
		Index:  idx,
		lab:    l,
		brVeth: "v" + strconv.Itoa(idx),
	}
	l.register(h.NS)
	if err := l.setupHost(ctx, h); err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		l.releaseName(name)
		// Deleting the host namespace destroys both veth ends.
		return nil, errors.Join(fmt.Errorf("lab: AddHost %s: %w", name, err), deleteNetns(dctx, h.NS))
	}
	// Neighbors are added and the host listed under one lock, so two
	// hosts added at once each learn the other.
	l.neighMu.Lock()
	err := l.addNeighbors(ctx, h)
	if err == nil {
		l.mu.Lock()
		l.hosts = append(l.hosts, h)
		l.mu.Unlock()
	}
	l.neighMu.Unlock()
	if err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		l.releaseName(name)
		return nil, errors.Join(fmt.Errorf("lab: AddHost %s: %w", name, err), deleteNetns(dctx, h.NS))
	}
	l.logf("lab: host %s: namespace %s, %s/%d", name, h.NS, h.IP, Subnet.Bits())
	return h, nil
}

func (l *Lab) setupHost(ctx context.Context, h *Host) error {
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	ns, br := h.NS, l.brNS
	addr := fmt.Sprintf("%s/%d", h.IP, Subnet.Bits())
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", h.brVeth, "type", "veth", "peer", "name", HostIface, "address", hostMAC(h.IP), "netns", ns},
		{"-n", br, "link", "set", h.brVeth, "master", BridgeName},
		{"-n", br, "link", "set", h.brVeth, "up"},
		{"-n", ns, "addr", "add", addr, "dev", HostIface},
		{"-n", ns, "link", "set", HostIface, "up"},
		{"-n", ns, "route", "replace", "224.0.0.0/4", "dev", HostIface},
	}
	for _, args := range steps {
		if _, err := runCmd(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// hostMAC is the fixed hardware address of the host with address ip, so
// that neighbor entries can be written before the host answers.
func hostMAC(ip netip.Addr) string {
	return fmt.Sprintf("02:00:c6:33:64:%02x", ip.As4()[3])
}

// addNeighbors writes permanent neighbor (ARP) entries between h and every
// host already listed, both ways. Without them a lab of 40 hosts stops
// working: the kernel's neighbor table is one for all namespaces, capped by
// gc_thresh3 (1,024 entries unless raised in the initial namespace, which
// a test inside its own namespace cannot reach), and 40 hosts that all talk
// to each other need 1,560 entries; new ones then fail ("neighbor table
// overflow") and unicast between hosts stops. Permanent entries do not
// count against that cap (Linux 4.20 and later). Other addresses a host
// takes still resolve by ARP.
func (l *Lab) addNeighbors(ctx context.Context, h *Host) error {
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	entry := func(o *Host) []string {
		return []string{"neigh", "replace", o.IP.String(), "lladdr", hostMAC(o.IP), "dev", HostIface, "nud", "permanent"}
	}
	others := l.Hosts()
	if len(others) == 0 {
		return nil
	}
	// The new host's entries in one batch; each other host's by one command.
	var batch strings.Builder
	for _, o := range others {
		batch.WriteString(strings.Join(entry(o), " ") + "\n")
	}
	f, err := os.CreateTemp("", "lab-neigh-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(batch.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := runCmd(ctx, "ip", "-n", h.NS, "-batch", f.Name()); err != nil {
		return err
	}
	for _, o := range others {
		if _, err := runCmd(ctx, "ip", append([]string{"-n", o.NS}, entry(h)...)...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) releaseName(name string) {
	l.mu.Lock()
	delete(l.names, name)
	l.mu.Unlock()
}

// Hosts returns the hosts in creation order (a copy).
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Close tears the lab down: it aborts in-flight commands, SIGKILLs every
// process the lab started that is still running (and its process group) and
// waits for it to be reaped, closes the idle connections of the hosts' HTTP
// clients, and deletes every namespace of the lab (hosts first, the bridge
// last). After Close no namespace of the lab exists. Close is idempotent:
// later calls wait for the first one and return its result.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.closeDone
		return l.closeErr
	}
	l.closed = true
	l.mu.Unlock()

	l.stop()     // kills in-flight ip/tc/Exec commands
	l.ops.Wait() // no operation registers anything after this

	l.mu.Lock()
	procs := make([]*Proc, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	hosts := append([]*Host(nil), l.hosts...)
	namespaces := append([]string(nil), l.namespaces...)
	l.mu.Unlock()

	var errs []error
	for _, p := range procs {
		if err := p.sigkill(); err != nil {
			errs = append(errs, err)
		}
	}
	timer := time.NewTimer(killWaitTimeout)
	defer timer.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-timer.C:
			errs = append(errs, fmt.Errorf("lab: %s did not exit after SIGKILL", p))
		}
	}
	for _, h := range hosts {
		h.closeIdle()
	}

	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	// Hosts first (registered after the bridge), the bridge namespace last.
	for i := len(namespaces) - 1; i >= 0; i-- {
		if err := deleteNetns(ctx, namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.closeErr = errors.Join(errs...)
	close(l.closeDone)
	l.logf("lab: closed %s (%d hosts, %d processes killed)", l.base, len(hosts), len(procs))
	return l.closeErr
}

// deleteNetns deletes a named namespace; a namespace that does not exist is
// not an error.
func deleteNetns(ctx context.Context, ns string) error {
	if _, err := os.Lstat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := runCmd(ctx, "ip", "netns", "del", ns); err != nil {
		if _, serr := os.Lstat(filepath.Join(netnsDir, ns)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// Cleanup deletes stale namespaces left by crashed runs: those named
// <prefix><pid>x<n>... (the lab's naming scheme) whose pid is not a live
// process. Namespaces of live processes, this one included, are never
// touched. Processes still running inside a stale namespace are SIGKILLed
// first. prefix follows the rules of Options.Prefix ("" means "flk").
func Cleanup(prefix string) error {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lab: Cleanup: %w", err)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `([0-9]+)x[0-9]+(b|p|h[0-9]+)$`)
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		ns := e.Name()
		if out, err := runCmd(ctx, "ip", "netns", "pids", ns); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(f); err == nil && p > 0 {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		if err := deleteNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// processAlive reports whether pid is a live process (conservatively: any
// answer other than "no such process" counts as alive).
func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return !errors.Is(err, syscall.ESRCH)
}

// runCmd runs a short command and returns its stdout; the error includes
// the command line and its stderr.
func runCmd(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}
