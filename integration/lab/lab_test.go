//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a helper program (see TestMain).
const helperEnv = "FLOCK_LAB_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
	case "httpd":
		helperHTTPD(os.Args[1])
		return
	case "crash":
		helperCrash()
		return
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
	if Available() == nil {
		if err := Cleanup(DefaultPrefix); err != nil {
			fmt.Fprintln(os.Stderr, "lab: Cleanup:", err)
		}
	}
	code := m.Run()
	// No namespace of this process may survive the tests.
	if entries, err := os.ReadDir(netnsDir); err == nil {
		mine := regexp.MustCompile(`^[A-Za-z_-]+` + strconv.Itoa(os.Getpid()) + `x`)
		for _, e := range entries {
			if mine.MatchString(e.Name()) {
				fmt.Fprintln(os.Stderr, "leaked namespace:", e.Name())
				code = 1
			}
		}
	}
	os.Exit(code)
}

// helperHTTPD serves on addr until SIGTERM, then exits 0.
func helperHTTPD(addr string) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getpid())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s to %s", ln.Addr(), r.RemoteAddr)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	fmt.Printf("listening on %s\n", ln.Addr())
	<-sigc
	fmt.Println("got SIGTERM")
	srv.Close()
	os.Exit(0)
}

// helperCrash builds a lab with a running process, reports it and waits to
// be SIGKILLed by TestCrashRecovery.
func helperCrash() {
	ctx := context.Background()
	l, err := New(ctx, Options{Prefix: "flkcrash"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	h, err := l.AddHost(ctx, "a")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	p, err := h.Start(ctx, ProcConfig{Path: "sleep", Args: []string{"600"}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println(p.Pid(), l.BridgeNS(), h.NS)
	time.Sleep(time.Hour)
}

func newLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	l, err := New(testCtx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func addHosts(t *testing.T, l *Lab, names ...string) []*Host {
	t.Helper()
	var hosts []*Host
	for _, n := range names {
		h, err := l.AddHost(testCtx(t), n)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	return hosts
}

func mustPing(t *testing.T, from *Host, to *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testCtx(t), 15*time.Second)
	defer cancel()
	if err := from.Ping(ctx, to.IP); err != nil {
		t.Fatalf("%s cannot reach %s: %v", from, to, err)
	}
}

func mustNotPing(t *testing.T, from *Host, to *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testCtx(t), 1500*time.Millisecond)
	defer cancel()
	if err := from.Ping(ctx, to.IP); err == nil {
		t.Fatalf("%s unexpectedly reached %s", from, to)
	}
}

// rootState describes the root namespace's links and addresses.
func rootState(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, args := range [][]string{{"-o", "link", "show"}, {"-o", "addr", "show"}, {"route", "show"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			// Keep what identifies links/addresses/routes, not counters or state.
			switch args[1] {
			case "link":
				lines = append(lines, "link "+f[1])
			case "addr":
				lines = append(lines, "addr "+strings.Join(f[1:4], " "))
			default:
				lines = append(lines, "route "+f[0]+" "+f[1]+" "+f[2])
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func netnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

var mcastGroup = &net.UDPAddr{IP: net.IPv4(239, 255, 77, 77), Port: 45588}

// joinGroup joins mcastGroup on the default interface of each host, the way
// a daemon would (ListenMulticastUDP with a nil interface).
func joinGroup(t *testing.T, hosts ...*Host) []*net.UDPConn {
	t.Helper()
	var conns []*net.UDPConn
	for _, h := range hosts {
		var c *net.UDPConn
		if err := h.Do(func() (err error) {
			c, err = net.ListenMulticastUDP("udp4", nil, mcastGroup)
			return err
		}); err != nil {
			t.Fatalf("join on %s: %v", h, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

func newSender(t *testing.T, from *Host) *net.UDPConn {
	t.Helper()
	var sender *net.UDPConn
	if err := from.Do(func() (err error) {
		sender, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	return sender
}

// checkMulticast sends one datagram from `from` to a multicast group and
// checks every host in `to` receives it.
func checkMulticast(t *testing.T, from *Host, to ...*Host) {
	t.Helper()
	expectMulticast(t, from, newSender(t, from), joinGroup(t, to...))
}

// expectMulticast sends from sender (a socket of host from) to mcastGroup
// until every conn has received the message.
func expectMulticast(t *testing.T, from *Host, sender *net.UDPConn, conns []*net.UDPConn) {
	t.Helper()
	group := mcastGroup
	msg := fmt.Sprintf("heartbeat from %s %d", from.Name, time.Now().UnixNano())
	// Multicast is unreliable: resend until every receiver has the message.
	got := make([]bool, len(conns))
	deadline := time.Now().Add(10 * time.Second)
	for slices.Contains(got, false) {
		if time.Now().After(deadline) {
			t.Fatalf("multicast from %s not received by all receivers: %v", from, got)
		}
		if _, err := sender.WriteTo([]byte(msg), group); err != nil {
			t.Fatalf("multicast send from %s: %v", from, err)
		}
		for i, c := range conns {
			if got[i] {
				continue
			}
			buf := make([]byte, 1500)
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			for {
				n, src, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				if string(buf[:n]) == msg {
					if src.IP.String() != from.IP.String() {
						t.Errorf("multicast source %v, want %v", src.IP, from.IP)
					}
					got[i] = true
					break
				}
			}
		}
	}
}

func TestNetwork(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	before := rootState(t)
	l := newLab(t, Options{})
	hosts := addHosts(t, l, "a", "b", "c")
	a, b, c := hosts[0], hosts[1], hosts[2]

	if got := l.Hosts(); len(got) != 3 || got[0] != a || got[2] != c {
		t.Fatalf("Hosts() = %v", got)
	}
	for i, h := range hosts {
		if want := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}); h.IP != want {
			t.Errorf("%s: IP %v, want %v", h.Name, h.IP, want)
		}
		if !strings.HasPrefix(h.NS, DefaultPrefix+strconv.Itoa(os.Getpid())+"x") {
			t.Errorf("%s: namespace %q lacks prefix+pid", h.Name, h.NS)
		}
		out, err := h.Exec(testCtx(t), "ip", "-o", "-4", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(string(out), h.IP.String()+"/24") {
			t.Errorf("%s: eth0 addresses: %s %v", h.Name, out, err)
		}
	}
	if _, err := l.AddHost(testCtx(t), "a"); err == nil {
		t.Error("duplicate host name accepted")
	}

	mustPing(t, a, b)
	mustPing(t, b, a)
	mustPing(t, c, a)
	mustPing(t, a, a)
	if _, err := exec.LookPath("ping"); err == nil {
		out, err := a.Exec(testCtx(t), "ping", "-c1", "-W2", b.IP.String())
		if err != nil {
			t.Errorf("ping binary: %v\n%s", err, out)
		}
	} else {
		t.Log("no ping binary; used Host.Ping only")
	}
	checkMulticast(t, a, b, c)
	checkMulticast(t, c, a, b)

	// TCP between hosts, both ends in-process.
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp4", b.IP.String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		conn, err := ln.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		if got := conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != a.IP.String() {
			t.Errorf("connection from %s, want %s", got, a.IP)
		}
		io.WriteString(conn, "hi")
	})
	conn, err := a.DialContext(testCtx(t), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := io.ReadAll(conn)
	conn.Close()
	wg.Wait()
	if err != nil || string(msg) != "hi" {
		t.Fatalf("read %q, %v", msg, err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	list := strings.Fields(netnsList(t))
	for _, ns := range []string{l.BridgeNS(), a.NS, b.NS, c.NS} {
		if slices.Contains(list, ns) {
			t.Errorf("namespace %s survived Close:\n%s", ns, list)
		}
	}
	if after := rootState(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.AddHost(testCtx(t), "d"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close: %v, want ErrClosed", err)
	}
	if err := a.LinkDown(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("LinkDown after Close: %v, want ErrClosed", err)
	}
}

func TestLinkDownUp(t *testing.T) {
	t.Parallel() // a lab of its own, mostly waiting: see TestConcurrentLabsIsolated
	l := newLab(t, Options{})
	hosts := addHosts(t, l, "a", "b", "c")
	a, b, c := hosts[0], hosts[1], hosts[2]
	mustPing(t, a, b)
	// Sockets opened before the link flaps, as a running daemon has them.
	bJoined := joinGroup(t, b)
	bSender := newSender(t, b)
	expectMulticast(t, a, newSender(t, a), bJoined)

	if err := b.LinkDown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, a, b)
	mustNotPing(t, b, a)
	mustPing(t, a, c) // the rest of the network is unaffected

	if err := b.LinkUp(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mustPing(t, a, b)
	mustPing(t, b, a)
	out, err := b.Exec(testCtx(t), "ip", "route", "show", "224.0.0.0/4")
	if err != nil || !strings.Contains(string(out), "dev eth0") {
		t.Fatalf("multicast route after LinkUp: %q %v", out, err)
	}
	checkMulticast(t, b, a, c)
	checkMulticast(t, a, b)
	expectMulticast(t, b, bSender, joinGroup(t, a, c))
	expectMulticast(t, c, newSender(t, c), bJoined)
}

func TestLoss(t *testing.T) {
	t.Parallel() // a lab of its own, mostly waiting: see TestConcurrentLabsIsolated
	l := newLab(t, Options{})
	hosts := addHosts(t, l, "a", "b")
	a, b := hosts[0], hosts[1]
	ctx := testCtx(t)
	if err := b.ClearLoss(ctx); err != nil {
		t.Fatalf("ClearLoss without loss: %v", err)
	}
	mustPing(t, a, b)

	if err := b.SetLoss(ctx, 100); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, a, b)
	mustNotPing(t, b, a)
	if err := b.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	mustPing(t, a, b)
	mustPing(t, b, a)

	// 50% on b: about half of a's datagrams reach b.
	if err := b.SetLoss(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if err := b.SetLoss(ctx, 50); err != nil { // replace, not add
		t.Fatal(err)
	}
	const sent = 400
	n := udpBurst(t, a, b, sent)
	t.Logf("50%% loss: %d of %d datagrams received", n, sent)
	if n < sent/4 || n > sent*3/4 {
		t.Errorf("50%% loss: %d of %d datagrams received", n, sent)
	}
	if err := b.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	for _, end := range b.linkEnds() {
		out, err := exec.Command("tc", "-n", end[0], "qdisc", "show", "dev", end[1]).CombinedOutput()
		if err != nil || strings.Contains(string(out), "netem") || strings.Contains(string(out), "clsact") {
			t.Errorf("after ClearLoss on %v: %s %v", end, out, err)
		}
	}

	// Egress only: b's datagrams are lost, a's reach b.
	mustPing(t, a, b) // fresh ARP entries on both sides
	if err := b.SetEgressLoss(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if n := udpBurst(t, a, b, 50); n != 50 {
		t.Errorf("egress loss on b: %d of 50 datagrams a->b received", n)
	}
	if n := udpBurst(t, b, a, 50); n != 0 {
		t.Errorf("egress loss on b: %d of 50 datagrams b->a received", n)
	}
	if err := b.SetEgressLoss(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if n := udpBurst(t, b, a, 50); n != 50 {
		t.Errorf("after SetEgressLoss(0): %d of 50 datagrams b->a received", n)
	}
	if err := b.SetLoss(ctx, 101); err == nil {
		t.Error("SetLoss(101) accepted")
	}
}

// procState returns the state letter of /proc/PID/stat.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "?"
	}
	return s[i+2 : i+3]
}

// waitUntil polls cond (for states no event announces, like /proc state).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func waitDone(t *testing.T, p *Proc) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Done not closed", p)
	}
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestProcPidPauseResumeKill(t *testing.T) {
	l := newLab(t, Options{})
	h := addHosts(t, l, "a")[0]
	p, err := h.Start(testCtx(t), ProcConfig{Path: "sh", Args: []string{"-c", "echo $$; exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pid echo", func() bool { return strings.HasSuffix(p.Output(), "\n") })
	if got := strings.TrimSpace(p.Output()); got != strconv.Itoa(p.Pid()) {
		t.Fatalf("program says pid %q, Pid() = %d", got, p.Pid())
	}
	// The process is in the host's namespace.
	if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", p.Pid())), nsInode(t, filepath.Join(netnsDir, h.NS)); got != want {
		t.Errorf("process netns inode %d, host netns inode %d", got, want)
	}
	// ... and in its own process group.
	if pgid, err := syscall.Getpgid(p.Pid()); err != nil || pgid != p.Pid() {
		t.Errorf("pgid %d (%v), want %d", pgid, err, p.Pid())
	}

	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "state T", func() bool { return procState(p.Pid()) == "T" })
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "state S", func() bool { return procState(p.Pid()) == "S" })
	select {
	case <-p.Done():
		t.Fatal("Done closed while running")
	default:
	}
	if err := p.ExitErr(); err != nil {
		t.Errorf("ExitErr while running: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	var ee *exec.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) || !strings.Contains(err.Error(), "killed") {
		t.Errorf("ExitErr after Kill: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit: %v", err)
	}
}

func TestProcStopExitStatus(t *testing.T) {
	l := newLab(t, Options{})
	h := addHosts(t, l, "a")[0]
	ctx := testCtx(t)

	// Exit status is reported.
	p, err := h.Start(ctx, ProcConfig{Path: "sh", Args: []string{"-c", "echo out; echo err >&2; exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	var ee *exec.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("ExitErr = %v, want exit status 3", err)
	}
	if err := p.Stop(ctx); !errors.As(err, &ee) {
		t.Errorf("Stop after exit = %v", err)
	}
	if out := p.Output(); out != "out\nerr\n" {
		t.Errorf("Output = %q", out)
	}

	// Exit 0 is nil, with Env passed and output in LogDir.
	dir := t.TempDir()
	p, err = h.Start(ctx, ProcConfig{Path: "/bin/sh", Args: []string{"-c", "echo $LABVAR"}, Env: []string{"LABVAR=fromenv"}, LogDir: dir, Name: "envtest"})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	if err := p.ExitErr(); err != nil {
		t.Errorf("ExitErr = %v", err)
	}
	if filepath.Dir(p.LogPath()) != dir || !strings.Contains(filepath.Base(p.LogPath()), "a-envtest") {
		t.Errorf("LogPath = %q", p.LogPath())
	}
	if out := p.Output(); out != "fromenv\n" {
		t.Errorf("Output = %q", out)
	}

	// Stop on a program that ignores SIGTERM: killed when ctx ends.
	p, err = h.Start(ctx, ProcConfig{Path: "sh", Args: []string{"-c", `trap "" TERM; echo ready; exec sleep 60`}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ready", func() bool { return strings.Contains(p.Output(), "ready") })
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := p.Stop(sctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop of a SIGTERM-ignoring program = %v", err)
	}
	waitDone(t, p)

	if _, err := h.Start(ctx, ProcConfig{Path: "no-such-program-flk"}); err == nil {
		t.Error("Start of a missing program succeeded")
	}
	if _, err := h.Exec(ctx, "sh", "-c", "exit 4"); err == nil {
		t.Error("Exec exit 4: no error")
	}
}

func TestHTTPAndStopPaused(t *testing.T) {
	l := newLab(t, Options{})
	hosts := addHosts(t, l, "server", "client")
	srv, cli := hosts[0], hosts[1]
	ctx := testCtx(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(srv.IP, 8080).String()
	p, err := srv.Start(ctx, ProcConfig{Path: self, Args: []string{addr}, Env: []string{helperEnv + "=httpd"}, Name: "httpd", LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cli.WaitDial(wctx, "tcp", addr); err != nil {
		t.Fatalf("%v\noutput: %s", err, p.Output())
	}
	get := func(path string) string {
		t.Helper()
		resp, err := cli.HTTPClient().Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return string(body)
	}
	if got := get("/pid"); got != strconv.Itoa(p.Pid()) {
		t.Errorf("server pid %s, Pid() = %d", got, p.Pid())
	}
	if got := get("/"); !strings.Contains(got, "to "+cli.IP.String()+":") {
		t.Errorf("GET / = %q, want the client's lab address", got)
	}
	if _, err := cli.HTTPClient().Get("http://localhost:8080/"); err == nil {
		t.Error("HTTPClient resolved a host name")
	}

	// A paused server times out; Stop still works (SIGCONT after SIGTERM).
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "state T", func() bool { return procState(p.Pid()) == "T" })
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.Stop(sctx); err != nil {
		t.Fatalf("Stop of a paused server: %v\noutput: %s", err, p.Output())
	}
	if out := p.Output(); !strings.Contains(out, "listening on "+addr) || !strings.Contains(out, "got SIGTERM") {
		t.Errorf("output: %q", out)
	}
}

func TestCloseKillsProcesses(t *testing.T) {
	l := newLab(t, Options{Prefix: "flkclose"})
	hosts := addHosts(t, l, "a", "b")
	var procs []*Proc
	for _, h := range hosts {
		for _, args := range [][]string{{"60"}, {"61"}} {
			p, err := h.Start(testCtx(t), ProcConfig{Path: "sleep", Args: args})
			if err != nil {
				t.Fatal(err)
			}
			procs = append(procs, p)
		}
	}
	if err := procs[0].Pause(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	for _, p := range procs {
		select {
		case <-p.Done():
		default:
			t.Errorf("%s still running after Close", p)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid())); err == nil {
			t.Errorf("%s: /proc entry still exists", p)
		}
	}
	list := strings.Fields(netnsList(t))
	for _, ns := range []string{l.BridgeNS(), hosts[0].NS, hosts[1].NS} {
		if slices.Contains(list, ns) {
			t.Errorf("namespace %s survived Close: %v", ns, list)
		}
	}
	if _, err := hosts[0].Start(testCtx(t), ProcConfig{Path: "sleep", Args: []string{"1"}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestCleanup(t *testing.T) {
	const prefix = "flkcln"
	live := newLab(t, Options{Prefix: prefix})
	h := addHosts(t, live, "a")[0]

	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	if processAlive(dead) {
		t.Skipf("pid %d was reused", dead)
	}
	stale := []string{fmt.Sprintf("%s%dx1b", prefix, dead), fmt.Sprintf("%s%dx1h0", prefix, dead)}
	other := fmt.Sprintf("%sother%dx1b", prefix, dead) // another prefix: not touched
	for _, ns := range append(stale, other) {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	if err := Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	list := strings.Fields(netnsList(t))
	for _, ns := range stale {
		if slices.Contains(list, ns) {
			t.Errorf("stale namespace %s not removed", ns)
		}
	}
	for _, ns := range []string{other, h.NS, live.BridgeNS()} {
		if !slices.Contains(list, ns) {
			t.Errorf("namespace %s was removed", ns)
		}
	}
	mustPing(t, h, h)
	if err := Cleanup("bad1"); err == nil {
		t.Error("Cleanup accepted a prefix with digits")
	}
	if _, err := New(testCtx(t), Options{Prefix: "x9"}); err == nil {
		t.Error("New accepted a prefix with digits")
	}
}

func TestRing(t *testing.T) {
	var r ring
	if r.String() != "" {
		t.Fatal("empty ring not empty")
	}
	r.Write([]byte("hello "))
	r.Write([]byte("world"))
	if got := r.String(); got != "hello world" {
		t.Fatalf("got %q", got)
	}
	var want []byte
	for i := 0; len(want) < 3*RingSize; i++ {
		line := []byte(fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i%5000)))
		r.Write(line)
		want = append(want, line...)
	}
	all := append([]byte("hello world"), want...)
	got := r.String()
	header := fmt.Sprintf("[lab: %d earlier bytes dropped]\n", len(all)-RingSize)
	if !strings.HasPrefix(got, header) || got[len(header):] != string(all[len(all)-RingSize:]) {
		t.Fatalf("ring content wrong (len %d)", len(got))
	}
	big := make([]byte, RingSize+10)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	r.Write(big)
	if got := r.String(); !strings.HasSuffix(got, string(big[10:])) {
		t.Fatal("big write not kept")
	}
}

func TestLossBytecode(t *testing.T) {
	if got := lossBytecode(100); got != "1,6 0 0 2" {
		t.Errorf("100%%: %s", got)
	}
	if got := lossBytecode(50); got != "4,32 0 0 4294963256,53 1 0 2147483648,6 0 0 2,6 0 0 4294967295" {
		t.Errorf("50%%: %s", got)
	}
}

func TestDialRefusesNames(t *testing.T) {
	l := newLab(t, Options{})
	h := addHosts(t, l, "a")[0]
	if _, err := h.DialContext(testCtx(t), "tcp", "localhost:80"); err == nil || !strings.Contains(err.Error(), "not an IP") {
		t.Errorf("DialContext with a name: %v", err)
	}
}

// TestCrashRecovery: when a test process dies without Close, its processes
// die with it (PR_SET_PDEATHSIG) and Cleanup removes its namespaces.
func TestCrashRecovery(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), self)
	cmd.Env = append(os.Environ(), helperEnv+"=crash")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var brNS, hostNS string
	if _, err := fmt.Fscan(stdout, &pid, &brNS, &hostNS); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	t.Cleanup(func() { // in case the test fails half way
		exec.Command("ip", "netns", "del", hostNS).Run()
		exec.Command("ip", "netns", "del", brNS).Run()
	})
	if st := procState(pid); st == "gone" || st == "Z" {
		t.Fatalf("helper's process %d not running: %s", pid, st)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitUntil(t, "orphan killed", func() bool { st := procState(pid); return st == "gone" || st == "Z" })

	list := strings.Fields(netnsList(t))
	if !slices.Contains(list, brNS) || !slices.Contains(list, hostNS) {
		t.Fatalf("crashed lab's namespaces %s %s missing before Cleanup: %v", brNS, hostNS, list)
	}
	if err := Cleanup("flkcrash"); err != nil {
		t.Fatal(err)
	}
	list = strings.Fields(netnsList(t))
	if slices.Contains(list, brNS) || slices.Contains(list, hostNS) {
		t.Fatalf("Cleanup left %s %s: %v", brNS, hostNS, list)
	}
}

// udpBurst sends n datagrams from one host to another (paced) and returns how
// many arrived. ARP entries must already exist (ping first).
func udpBurst(t *testing.T, from, to *Host, n int) int {
	t.Helper()
	var rc, sc *net.UDPConn
	if err := to.Do(func() (err error) {
		rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: to.IP.AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := from.Do(func() (err error) {
		sc, err = net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	received := make(chan int, 1)
	go func() {
		got := 0
		buf := make([]byte, 64)
		for {
			rc.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := rc.Read(buf); err != nil {
				break
			}
			got++
		}
		received <- got
	}()
	for i := range n {
		if _, err := sc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			time.Sleep(time.Millisecond) // pacing, so no queue overflows
		}
	}
	return <-received
}

// blockGroup is the multicast group of the BlockMulticast tests.
var blockGroup = &net.UDPAddr{IP: net.IPv4(228, 0, 0, 4), Port: 45564}

// groupReceiver opens a socket in h bound to blockGroup and joins the group
// on h's eth0.
func groupReceiver(t *testing.T, h *Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		ifi, err := net.InterfaceByName(HostIface)
		if err != nil {
			return err
		}
		pc, err := net.ListenPacket("udp4", blockGroup.String())
		if err != nil {
			return err
		}
		if err := ipv4.NewPacketConn(pc).JoinGroup(ifi, &net.UDPAddr{IP: blockGroup.IP}); err != nil {
			pc.Close()
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	}); err != nil {
		t.Fatalf("join %v on %s: %v", blockGroup.IP, h, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// groupSender opens a UDP socket in h bound to h's address with
// IP_MULTICAST_IF set to h's address (multicast loopback stays on).
func groupSender(t *testing.T, h *Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(h.IP, 0).String())
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	}); err != nil {
		t.Fatalf("sender on %s: %v", h, err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInet4Addr(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_IF, h.IP.As4())
	}); err != nil || serr != nil {
		t.Fatalf("IP_MULTICAST_IF on %s: %v %v", h, err, serr)
	}
	return c
}

// multicastRound sends one message from sender (a socket of host from) to
// blockGroup. Every conn in want must receive it: the message is resent
// every 200ms until they have (at most 10s), and at least 5 times. No conn in
// never may receive it within 1s of the first send.
func multicastRound(t *testing.T, from *Host, sender *net.UDPConn, want, never []*net.UDPConn) {
	t.Helper()
	msg := fmt.Sprintf("multicast from %s %d", from.Name, time.Now().UnixNano())
	leaked := make([]bool, len(never))
	var wg sync.WaitGroup
	for i, c := range never {
		c.SetReadDeadline(time.Now().Add(time.Second))
		wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return // deadline
				}
				if string(buf[:n]) == msg {
					leaked[i] = true
					return
				}
			}
		})
	}
	got := make([]bool, len(want))
	deadline := time.Now().Add(10 * time.Second)
	for sent := 0; sent < 5 || slices.Contains(got, false); sent++ {
		if time.Now().After(deadline) {
			wg.Wait()
			t.Fatalf("multicast from %s not received by all receivers: %v", from, got)
		}
		if _, err := sender.WriteTo([]byte(msg), blockGroup); err != nil {
			t.Fatalf("multicast send from %s: %v", from, err)
		}
		for i, c := range want {
			if got[i] {
				continue
			}
			buf := make([]byte, 1500)
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			for {
				n, src, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				if string(buf[:n]) == msg {
					if src.IP.String() != from.IP.String() {
						t.Errorf("multicast source %v, want %v", src.IP, from.IP)
					}
					got[i] = true
					break
				}
			}
		}
	}
	wg.Wait()
	for i, l := range leaked {
		if l {
			t.Errorf("multicast from %s reached never[%d], a receiver that must not get it", from, i)
		}
	}
}

// mustTCP connects from one host to a listener on another and reads a
// greeting.
func mustTCP(t *testing.T, from, to *Host) {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(to.IP, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		conn, err := ln.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "hi")
	})
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	conn, err := from.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatalf("TCP %s -> %s: %v", from, to, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if msg, err := io.ReadAll(conn); err != nil || string(msg) != "hi" {
		t.Errorf("TCP %s -> %s: read %q, %v", from, to, msg, err)
	}
}

// clsactPrefs returns the filter preferences on ingress and egress of the
// host's eth0, or nil, nil if it has no clsact qdisc.
func clsactPrefs(t *testing.T, h *Host) (ingress, egress []int) {
	t.Helper()
	ctx := testCtx(t)
	out, err := runCmd(ctx, "tc", "-n", h.NS, "qdisc", "show", "dev", HostIface)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "clsact") {
		return nil, nil
	}
	if ingress, err = filterPrefs(ctx, h.NS, HostIface, "ingress"); err != nil {
		t.Fatal(err)
	}
	if egress, err = filterPrefs(ctx, h.NS, HostIface, "egress"); err != nil {
		t.Fatal(err)
	}
	return append([]int{}, ingress...), append([]int{}, egress...)
}

func checkPrefs(t *testing.T, h *Host, wantIngress, wantEgress []int) {
	t.Helper()
	in, eg := clsactPrefs(t, h)
	slices.Sort(in)
	slices.Sort(eg)
	if !slices.Equal(in, wantIngress) || !slices.Equal(eg, wantEgress) {
		t.Errorf("%s eth0 filter prefs: ingress %v egress %v, want %v %v", h, in, eg, wantIngress, wantEgress)
	}
}

func TestBlockMulticast(t *testing.T) {
	t.Parallel() // a lab of its own, mostly waiting: see TestConcurrentLabsIsolated
	l := newLab(t, Options{})
	hosts := addHosts(t, l, "a", "b", "c")
	a, b, c := hosts[0], hosts[1], hosts[2]
	ctx := testCtx(t)
	if err := a.UnblockMulticast(ctx); err != nil {
		t.Fatalf("UnblockMulticast without block: %v", err)
	}
	mustPing(t, a, b)
	mustPing(t, b, a)

	aRecv, bRecv, cRecv := groupReceiver(t, a), groupReceiver(t, b), groupReceiver(t, c)
	aSend, bSend := groupSender(t, a), groupSender(t, b)
	multicastRound(t, b, bSend, []*net.UDPConn{aRecv, cRecv}, nil)
	multicastRound(t, a, aSend, []*net.UDPConn{bRecv}, nil)

	for range 2 { // idempotent
		if err := a.BlockMulticast(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkPrefs(t, a, []int{mcastPref}, []int{mcastPref})
	// b's multicast reaches c but not a.
	multicastRound(t, b, bSend, []*net.UDPConn{cRecv}, []*net.UDPConn{aRecv})
	// a's multicast reaches a itself (loopback) but not b.
	multicastRound(t, a, aSend, []*net.UDPConn{aRecv}, []*net.UDPConn{bRecv})
	// A receiver joined while blocked gets nothing either.
	multicastRound(t, b, bSend, []*net.UDPConn{cRecv}, []*net.UDPConn{groupReceiver(t, a)})
	// Unicast is unaffected.
	mustTCP(t, b, a)
	mustTCP(t, a, b)
	mustPing(t, b, a)
	mustPing(t, a, b)
	mustPing(t, c, a)

	if err := a.UnblockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	checkPrefs(t, a, nil, nil)
	multicastRound(t, b, bSend, []*net.UDPConn{aRecv, cRecv}, nil)
	multicastRound(t, a, aSend, []*net.UDPConn{bRecv}, nil)
	if err := a.UnblockMulticast(ctx); err != nil {
		t.Fatalf("second UnblockMulticast: %v", err)
	}
}

func TestBlockMulticastWithLoss(t *testing.T) {
	t.Parallel() // a lab of its own, mostly waiting: see TestConcurrentLabsIsolated
	l := newLab(t, Options{})
	hosts := addHosts(t, l, "a", "b")
	a, b := hosts[0], hosts[1]
	ctx := testCtx(t)
	mustPing(t, a, b)
	mustPing(t, b, a)
	aRecv, bRecv := groupReceiver(t, a), groupReceiver(t, b)
	aSend, bSend := groupSender(t, a), groupSender(t, b)
	blocked := func() {
		t.Helper()
		multicastRound(t, b, bSend, nil, []*net.UDPConn{aRecv})
		multicastRound(t, a, aSend, []*net.UDPConn{aRecv}, []*net.UDPConn{bRecv})
	}
	delivered := func() {
		t.Helper()
		multicastRound(t, b, bSend, []*net.UDPConn{aRecv}, nil)
		multicastRound(t, a, aSend, []*net.UDPConn{bRecv}, nil)
	}

	// Low loss first: packets the loss filter lets through must still
	// reach the multicast filter behind it.
	if err := a.SetEgressLoss(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.BlockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	blocked()
	mustTCP(t, b, a)
	if err := a.SetEgressLoss(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if l.loss.Load() == lossBPF {
		checkPrefs(t, a, []int{mcastPref}, []int{lossPref, mcastPref})
	}
	if n := udpBurst(t, a, b, 50); n != 0 {
		t.Errorf("egress loss 100%% with multicast blocked: %d of 50 datagrams a->b received", n)
	}
	blocked()

	if err := a.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	checkPrefs(t, a, []int{mcastPref}, []int{mcastPref})
	mustPing(t, a, b)
	if n := udpBurst(t, a, b, 50); n != 50 {
		t.Errorf("after ClearLoss: %d of 50 datagrams a->b received", n)
	}
	blocked()

	if err := a.UnblockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	checkPrefs(t, a, nil, nil)
	delivered()

	// The other way round: unblocking leaves the loss working.
	if err := a.BlockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.SetEgressLoss(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if err := a.UnblockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	if l.loss.Load() == lossBPF {
		checkPrefs(t, a, nil, []int{lossPref})
	}
	if n := udpBurst(t, a, b, 50); n != 0 {
		t.Errorf("egress loss 100%% after UnblockMulticast: %d of 50 datagrams a->b received", n)
	}
	if err := a.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	checkPrefs(t, a, nil, nil)
	mustPing(t, a, b)
	delivered()
}

func TestMcastBytecode(t *testing.T) {
	const want = "9,32 0 0 4294963204,21 6 0 5,32 0 0 4294963200,21 0 4 2048," +
		"32 0 0 4293918736,84 0 0 4026531840,21 0 1 3758096384,6 0 0 2,6 0 0 4294967295"
	if mcastBytecode != want {
		t.Errorf("mcastBytecode = %s", mcastBytecode)
	}
}

// Labs that exist at the same time (the integration scenarios run in
// parallel, one lab each) use the same addresses but never meet: each has
// its own namespaces and bridge, so unicast to an address reaches the host
// of the sender's own lab, and multicast stays in the lab it was sent in.
func TestConcurrentLabsIsolated(t *testing.T) {
	t.Parallel()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	labs := make([]*Lab, 2)
	hosts := make([][]*Host, 2)
	var wg sync.WaitGroup
	for i := range labs {
		wg.Go(func() {
			l, err := New(testCtx(t), Options{Logf: t.Logf})
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() {
				if err := l.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			labs[i] = l
			for _, name := range []string{"a", "b"} {
				h, err := l.AddHost(testCtx(t), name)
				if err != nil {
					t.Error(err)
					return
				}
				hosts[i] = append(hosts[i], h)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	a1, b1, a2, b2 := hosts[0][0], hosts[0][1], hosts[1][0], hosts[1][1]
	if labs[0].BridgeNS() == labs[1].BridgeNS() || a1.NS == a2.NS || b1.NS == b2.NS {
		t.Fatalf("labs share namespaces: bridges %s and %s, hosts %s %s and %s %s",
			labs[0].BridgeNS(), labs[1].BridgeNS(), a1.NS, b1.NS, a2.NS, b2.NS)
	}
	if a1.IP != a2.IP || b1.IP != b2.IP {
		t.Fatalf("addresses differ between labs: %v %v and %v %v", a1.IP, b1.IP, a2.IP, b2.IP)
	}

	// The same address and port in both labs, each answering with its lab.
	port := 0
	for i, a := range []*Host{a1, a2} {
		var ln net.Listener
		if err := a.Do(func() (err error) {
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(a.IP, uint16(port)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		port = ln.Addr().(*net.TCPAddr).Port
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(conn, "lab %d", i)
				conn.Close()
			}
		}()
	}
	for i, b := range []*Host{b1, b2} {
		ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
		conn, err := b.DialContext(ctx, "tcp", netip.AddrPortFrom(a1.IP, uint16(port)).String()) // a1.IP == a2.IP
		cancel()
		if err != nil {
			t.Fatalf("%s of lab %d: %v", b, i, err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(conn)
		conn.Close()
		if want := fmt.Sprintf("lab %d", i); err != nil || string(got) != want {
			t.Errorf("%s of lab %d reached %q (%v), want %q", b, i, got, err, want)
		}
	}

	// Multicast from lab 0 reaches lab 0's other host, not lab 1's hosts
	// (joined to the same group), and the other way round.
	r := [][]*net.UDPConn{
		{groupReceiver(t, a1), groupReceiver(t, b1)},
		{groupReceiver(t, a2), groupReceiver(t, b2)},
	}
	multicastRound(t, a1, groupSender(t, a1), r[0][1:], r[1])
	multicastRound(t, a2, groupSender(t, a2), r[1][1:], r[0])
}
