package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/internal/leakcheck"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigure(t *testing.T) {
	file := writeFile(t, "[server]\nname = \"fromfile\"\n[cluster.receiver]\nport = 5000\n")
	tests := []struct {
		name    string
		args    []string
		check   func(t *testing.T, got string)
		wantErr string
		env     []string
	}{
		{"file values", []string{"--config", file}, func(t *testing.T, got string) {
			if got != "fromfile 127.0.0.1:8080 127.0.0.1 127.0.0.1 5000 default" {
				t.Errorf("got %s", got)
			}
		}, "", nil},
		{"flags override the file", []string{"--config", file, "--name", "n2", "--http", ":9090", "--bind", "127.0.0.2", "--receiver-host", "127.0.0.3", "--receiver-port", "4100"}, func(t *testing.T, got string) {
			if got != "n2 :9090 127.0.0.2 127.0.0.3 4100 default" {
				t.Errorf("got %s", got)
			}
		}, "", nil},
		{"the environment over the file", []string{"--config", file}, func(t *testing.T, got string) {
			if got != "fromenv 127.0.0.1:8080 127.0.0.1 127.0.0.1 5100 shop" {
				t.Errorf("got %s", got)
			}
		}, "", []string{"FLOCK_SERVER_NAME=fromenv", "FLOCK_CLUSTER_RECEIVER_PORT=5100", "FLOCK_CLUSTER_DOMAIN=shop"}},
		{"flags over the environment", []string{"--config", file, "--name", "n3", "--domain", "books"}, func(t *testing.T, got string) {
			if got != "n3 127.0.0.1:8080 127.0.0.1 127.0.0.1 5000 books" {
				t.Errorf("got %s", got)
			}
		}, "", []string{"FLOCK_SERVER_NAME=fromenv", "FLOCK_CLUSTER_DOMAIN=shop"}},
		{"the environment completes the file", []string{"--config", writeFile(t, "[cluster.membership]\nbind = \"198.51.100.1\"\n")}, func(t *testing.T, got string) {
			if got != "node1 127.0.0.1:8080 198.51.100.1 127.0.0.1 4000 default" {
				t.Errorf("got %s", got)
			}
		}, "", []string{"FLOCK_CLUSTER_SECURITY_INSECURE=true"}},
		{"bad environment value", []string{"--config", file}, nil, "FLOCK_CLUSTER_RECEIVER_PORT", []string{"FLOCK_CLUSTER_RECEIVER_PORT=many"}},
		{"named file missing", []string{"--config", filepath.Join(t.TempDir(), "nope.toml")}, nil, "no such file", nil},
		{"bad flag value is validated", []string{"--config", file, "--name", "a.b"}, nil, "server.name", nil},
		{"bad receiver port", []string{"--config", file, "--receiver-port", "70000"}, nil, "cluster.receiver.port", nil},
		{"bad file", []string{"--config", writeFile(t, "[cluster.membership]\nttl = \"one\"\n")}, nil, "cluster.membership.ttl", nil},
		{"unknown key names the line", []string{"--config", writeFile(t, "[server]\nname = \"a\"\nnmae = \"b\"\n")}, nil, "server.toml:3", nil},
		{"stray argument", []string{"--config", file, "extra"}, nil, "unexpected argument", nil},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			cfg, _, err := configure(tc.args, &stderr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, fmt.Sprintf("%s %s %s %s %d %s", cfg.Server.Name, cfg.Server.HTTP,
				cfg.Cluster.Membership.Bind, cfg.Cluster.Receiver.Host, cfg.Cluster.Receiver.Port, cfg.Cluster.Domain))
		})
	}
}

func TestConfigureWithoutDefaultFile(t *testing.T) {
	t.Chdir(t.TempDir()) // no conf/server.toml here
	cfg, _, err := configure(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Name != "node1" {
		t.Errorf("name %q, want the default", cfg.Server.Name)
	}
}

func TestRunExitCodes(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"--config", writeFile(t, "bogus = 1\n")}, &bytes.Buffer{}, &stderr); code != exitConfig {
		t.Errorf("bad config: exit %d, want %d", code, exitConfig)
	}
	if !strings.Contains(stderr.String(), `unknown key "bogus"`) {
		t.Errorf("stderr %q does not name the key", stderr.String())
	}
	if code := run(context.Background(), []string{"--help"}, &bytes.Buffer{}, &bytes.Buffer{}); code != exitOK {
		t.Errorf("--help: exit %d", code)
	}
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &stdout, &bytes.Buffer{}); code != exitOK || !strings.HasPrefix(stdout.String(), "flockd ") {
		t.Errorf("--version: exit %d, printed %q", code, stdout.String())
	}
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for the node's log writer and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTwoNodes runs two nodes in this process on loopback and reads their
// status the way an operator would.
func TestTwoNodes(t *testing.T) {
	leakcheck.Check(t)
	file := writeFile(t, fmt.Sprintf(`
[cluster.membership]
address = "239.255.%d.%d"
port = %d
frequency = "100ms"
drop_time = "1s"
`, rand.IntN(256), 1+rand.IntN(254), freePort(t, "udp")))

	type proc struct {
		http   string
		admin  string
		cancel context.CancelFunc
		done   chan int
		log    *syncBuffer
	}
	start := func(name string) *proc {
		ctx, cancel := context.WithCancel(context.Background())
		p := &proc{http: fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), admin: fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), cancel: cancel, done: make(chan int, 1), log: &syncBuffer{}}
		args := []string{"--config", file, "--name", name, "--http", p.http, "--admin", p.admin, "--receiver-port", fmt.Sprint(freePort(t, "tcp"))}
		go func() { p.done <- run(ctx, args, io.Discard, p.log) }()
		t.Cleanup(cancel)
		return p
	}
	a, b := start("a"), start("b")

	var st admin.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + a.admin + "/cluster/status")
		if err == nil {
			st = admin.Status{}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		}
		if err == nil && len(st.Members) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a never listed b: %+v, %v\nlog a:\n%s", st, err, a.log)
		}
		time.Sleep(20 * time.Millisecond) // the node runs in this process but its readiness is only visible over HTTP
	}
	if st.Local.Name != "a" || st.Local.Domain != "default" || len(st.Local.ID) != 32 {
		t.Errorf("local = %+v", st.Local)
	}
	if m := st.Members[0]; m.Name != "b" || m.State.String() != "alive" || m.LastSeen.IsZero() || !strings.HasPrefix(m.Address, "127.0.0.1:") {
		t.Errorf("member = %+v", m)
	}
	if st.Membership != "multicast" || st.Transport.Peers == nil {
		t.Errorf("membership %q, transport %+v", st.Membership, st.Transport)
	}
	if st.Heartbeats.Received == 0 || st.Heartbeats.Sent == 0 {
		t.Errorf("heartbeats = %+v", st.Heartbeats)
	}

	b.cancel() // as SIGTERM would
	if code := <-b.done; code != exitOK {
		t.Errorf("b exit %d, want 0; log:\n%s", code, b.log)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(a.log.String(), "event=left") {
		if time.Now().After(deadline) {
			t.Fatalf("a did not log b leaving:\n%s", a.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{"member=b", "address=\"127.0.0.1:", "event=joined"} {
		if !strings.Contains(a.log.String(), want) {
			t.Errorf("a's log lacks %q:\n%s", want, a.log)
		}
	}
	a.cancel()
	if code := <-a.done; code != exitOK {
		t.Errorf("a exit %d", code)
	}
}

// TestDuplicateNameExits: a second flockd started with the name of a live
// node finds out it is the duplicate and exits 1, naming the first one's
// address; the first one keeps serving.
func TestDuplicateNameExits(t *testing.T) {
	leakcheck.Check(t)
	file := writeFile(t, fmt.Sprintf(`
[cluster.membership]
address = "239.255.%d.%d"
port = %d
frequency = "100ms"
drop_time = "1s"
[cluster.manager]
state_transfer_timeout = "1s"
`, rand.IntN(256), 1+rand.IntN(254), freePort(t, "udp")))
	type proc struct {
		http   string
		rport  int
		cancel context.CancelFunc
		done   chan int
		log    *syncBuffer
	}
	start := func() *proc {
		ctx, cancel := context.WithCancel(context.Background())
		p := &proc{http: fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), rport: freePort(t, "tcp"), cancel: cancel, done: make(chan int, 1), log: &syncBuffer{}}
		args := []string{"--config", file, "--name", "dup", "--http", p.http, "--receiver-port", fmt.Sprint(p.rport)}
		go func() { p.done <- run(ctx, args, io.Discard, p.log) }()
		t.Cleanup(cancel)
		return p
	}
	first := start()
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + first.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first node never served: %v\n%s", err, first.log)
		}
		time.Sleep(20 * time.Millisecond) // the node starts in this process; readiness shows only over HTTP
	}

	second := start()
	select {
	case code := <-second.done:
		if code != exitFail {
			t.Errorf("the duplicate exited %d, want %d", code, exitFail)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the duplicate did not exit:\n%s", second.log)
	}
	firstAddr := fmt.Sprintf("127.0.0.1:%d", first.rport)
	for _, want := range []string{"level=error", "event=conflict", `address="` + firstAddr + `"`, "flockd failed", "started first", firstAddr} {
		if !strings.Contains(second.log.String(), want) {
			t.Errorf("the duplicate's log lacks %q:\n%s", want, second.log)
		}
	}
	select {
	case code := <-first.done:
		t.Fatalf("the first node exited %d:\n%s", code, first.log)
	default:
	}
	if resp, err := http.Get("http://" + first.http + "/counter"); err != nil {
		t.Errorf("the first node stopped serving: %v", err)
	} else {
		resp.Body.Close()
	}
	if !strings.Contains(first.log.String(), "it is the duplicate") {
		t.Errorf("the first node did not warn of the duplicate:\n%s", first.log)
	}
	first.cancel()
	if code := <-first.done; code != exitOK {
		t.Errorf("the first node exited %d:\n%s", code, first.log)
	}
}

// TestAdminListenerPageAndJSONLogs: the admin endpoints are on their own
// listener, behind the token, never on the public address, which serves
// the application and health only; the HTML page renders; logs are JSON
// when asked.
func TestAdminListenerPageAndJSONLogs(t *testing.T) {
	leakcheck.Check(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	file := writeFile(t, fmt.Sprintf(`
[server]
name = "solo"
http = %q
admin = %q
admin_token = "t0ken-0123456789abcdef"
log_format = "json"
[cluster.membership]
address = "239.255.%d.%d"
port = %d
[cluster.manager]
state_transfer_timeout = "1s"
`, httpAddr, adminAddr, rand.IntN(256), 1+rand.IntN(254), freePort(t, "udp")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", file, "--receiver-port", fmt.Sprint(freePort(t, "tcp"))}, io.Discard, log)
	}()

	const token = "t0ken-0123456789abcdef"
	get := func(url, token string) (int, string) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			req, _ := http.NewRequest("GET", url, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v\n%s", url, err, log)
			}
			time.Sleep(20 * time.Millisecond) // the node starts in this process; readiness shows only over HTTP
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for code, _ := get("http://"+httpAddr+"/healthz", ""); code != 200; code, _ = get("http://"+httpAddr+"/healthz", "") {
		if time.Now().After(deadline) {
			t.Fatalf("never ready\n%s", log)
		}
		time.Sleep(20 * time.Millisecond) // readiness shows only over HTTP
	}
	// A session, so that there is an id not to find in the answers.
	resp, err := http.Get("http://" + httpAddr + "/counter")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookie := ""
	for _, c := range resp.Cookies() {
		if c.Name == "FLOCKSESSIONID" {
			cookie = c.Value
		}
	}
	if cookie == "" {
		t.Fatal("the demo set no cookie")
	}
	tests := []struct {
		addr, path, token string
		want              int
		has               string
	}{
		{adminAddr, "/cluster/status", token, 200, `"name": "solo"`},
		{adminAddr, "/cluster/", token, 200, "no other members"},
		{adminAddr, "/cluster/sessions", token, 200, `"ref"`},
		{adminAddr, "/metrics", token, 200, "flock_sessions"},
		{adminAddr, "/cluster/status", "", http.StatusUnauthorized, ""},
		{adminAddr, "/cluster/sessions", "wrong-0123456789abcdef", http.StatusUnauthorized, ""},
		{adminAddr, "/healthz", "", 200, "ok"},
		{httpAddr, "/cluster/status", token, http.StatusNotFound, ""},
		{httpAddr, "/cluster/sessions", token, http.StatusNotFound, ""},
		{httpAddr, "/cluster/", token, http.StatusNotFound, ""},
		{httpAddr, "/metrics", token, http.StatusNotFound, ""},
		{httpAddr, "/healthz", "", 200, "ok"},
		{httpAddr, "/readyz", "", 200, "ok"},
		{httpAddr, "/livez", "", 200, "ok"},
		{httpAddr, "/counter", "", 200, ""},
	}
	for _, tc := range tests {
		code, body := get("http://"+tc.addr+tc.path, tc.token)
		if code != tc.want || !strings.Contains(body, tc.has) {
			t.Errorf("GET %s%s: %d, want %d with %q: %.300s", tc.addr, tc.path, code, tc.want, tc.has, body)
		}
		if cookie != "" && strings.Contains(body, cookie) {
			t.Errorf("GET %s%s shows a session id", tc.addr, tc.path)
		}
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("log line is not JSON: %q", line)
		} else if v["node"] != "solo" {
			t.Errorf("log line without the node field: %q", line)
		}
	}
}

func TestDrainAware(t *testing.T) {
	var draining atomic.Bool
	h := drainAware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), &draining)
	tests := []struct {
		path     string
		draining bool
		want     int
	}{
		{"/healthz", false, 200},
		{"/healthz", true, http.StatusServiceUnavailable},
		{"/cluster/status", true, 200},
	}
	for _, tc := range tests {
		draining.Store(tc.draining)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s draining=%v: %d, want %d", tc.path, tc.draining, rec.Code, tc.want)
		}
	}
}

// TestStartFailureExits: a bind address no interface has ends flockd at
// once with the cause, never a silent hang (no packet is sent: the join
// fails first).
func TestStartFailureExits(t *testing.T) {
	leakcheck.Check(t)
	file := writeFile(t, "[cluster.security]\ninsecure = true\n")
	log := &syncBuffer{}
	done := make(chan int, 1)
	start := time.Now()
	go func() {
		done <- run(context.Background(), []string{"--config", file, "--bind", "10.9.9.9", "--receiver-port", fmt.Sprint(freePort(t, "tcp")),
			"--http", fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), "--admin", fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))}, io.Discard, log)
	}()
	select {
	case code := <-done:
		if code == exitOK || !strings.Contains(log.String(), "no local interface has address 10.9.9.9") {
			t.Errorf("exit %d, log:\n%s", code, log)
		}
		t.Logf("exited %d after %v", code, time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("still running after 30 s\n%s", log)
	}
}

// TestDrainGrace: on SIGTERM (the context ending) the node answers
// /healthz and /readyz 503 while it still serves users, for the grace,
// then exits 0.
func TestDrainGrace(t *testing.T) {
	leakcheck.Check(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	file := writeFile(t, fmt.Sprintf(`
[server]
name = "solo"
http = %q
admin = "off"
drain_grace = "1500ms"
[cluster.membership]
address = "239.255.%d.%d"
port = %d
[cluster.manager]
state_transfer_timeout = "0s"
`, httpAddr, rand.IntN(256), 1+rand.IntN(254), freePort(t, "udp")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", file, "--receiver-port", fmt.Sprint(freePort(t, "tcp"))}, io.Discard, log)
	}()
	code := func(path string) int {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for code("/healthz") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("never ready\n%s", log)
		}
		time.Sleep(20 * time.Millisecond) // readiness shows only over HTTP
	}
	cancel()
	stopped := time.Now()
	for !strings.Contains(log.String(), "draining: not ready") {
		if time.Since(stopped) > 5*time.Second {
			t.Fatalf("no drain\n%s", log)
		}
		time.Sleep(5 * time.Millisecond) // the log is the event
	}
	tests := []struct {
		path string
		want int
	}{
		{"/healthz", http.StatusServiceUnavailable},
		{"/readyz", http.StatusServiceUnavailable},
		{"/livez", http.StatusOK},
		{"/counter", http.StatusOK},
	}
	for _, tc := range tests {
		if got := code(tc.path); got != tc.want {
			t.Errorf("during the grace, GET %s: %d, want %d", tc.path, got, tc.want)
		}
	}
	if c := <-done; c != exitOK {
		t.Errorf("exit %d", c)
	}
	took := time.Since(stopped)
	t.Logf("served through the grace, exited after %v", took.Round(time.Millisecond))
	if took < 1500*time.Millisecond {
		t.Errorf("exited after %v, within the 1.5 s grace", took)
	}
}
