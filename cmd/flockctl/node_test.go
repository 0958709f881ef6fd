package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
)

var fixedNow = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

// testApp is run's app with a fixed clock.
func testApp() (*app, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &app{
		stdout: &stdout,
		stderr: &stderr,
		now:    func() time.Time { return fixedNow },
		client: &http.Client{Timeout: httpTimeout},
	}, &stdout, &stderr
}

func runApp(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	a, out, errb := testApp()
	code = a.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func testStatus() admin.Status {
	return admin.Status{
		Local: admin.Local{
			Name: "node1", ID: "3f2a9c1e5b7d4a6081f2c3d4e5f60718", Address: "127.0.0.1:4000",
			Domain: "shop", Started: fixedNow.Add(-(2*time.Hour + 13*time.Minute)),
		},
		Membership: "multicast",
		Sessions:   42,
		Manager:    manager.Stats{Sessions: 42, TransferState: "done", Transferred: 40, TransferDuration: 1200 * time.Millisecond},
		Members: []admin.Member{
			{Name: "node3", ID: "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", Address: "127.0.0.1:4002", State: membership.Alive,
				LastSeen: fixedNow.Add(-2800 * time.Millisecond), Started: fixedNow.Add(-time.Hour)},
			{Name: "node2", ID: "1a2b3c4d5e6f708192a3b4c5d6e7f809", Address: "127.0.0.1:4001", State: membership.Alive,
				LastSeen: fixedNow.Add(-300 * time.Millisecond), Started: fixedNow.Add(-3 * time.Hour)},
		},
		Heartbeats: admin.Heartbeats{Sent: 16000, Received: 31990, Lost: 3},
		Transport: admin.Transport{
			Peers: []admin.Peer{
				{Address: "127.0.0.1:4001", Connected: true, Sent: 1520, SentBytes: 400000},
				{Address: "127.0.0.1:4002", Connected: false, Queued: 3, Inflight: 1, Bytes: 1229, Sent: 1498, Failed: 2, Retried: 5},
			},
			Receiver: admin.Receiver{Connections: 2, Open: 2, Frames: 3000},
		},
	}
}

func testSessions() []manager.Info {
	return []manager.Info{
		{Ref: "9f86d081884c7d65", Version: 3, Size: 120, Keys: 2,
			Created: fixedNow.Add(-time.Hour), LastAccess: fixedNow.Add(-95 * time.Second), AccessedBy: "node1"},
		{Ref: "2c26b46b68ffc68f", Version: 17, Size: 4096, Keys: 5,
			Created: fixedNow.Add(-time.Hour), LastAccess: fixedNow.Add(-1500 * time.Millisecond), AccessedBy: "node2"},
		{Ref: "fcde2b2edba56bf4", Version: 1, Size: 0, Keys: 0,
			Created: fixedNow.Add(-time.Minute), LastAccess: fixedNow.Add(-12 * time.Second), AccessedBy: "node1"},
	}
}

// serveNode serves status and sessions the way admin does.
func serveNode(t *testing.T, status admin.Status, sessions []manager.Info) string {
	t.Helper()
	write := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster/status", func(w http.ResponseWriter, r *http.Request) { write(w, status) })
	mux.HandleFunc("GET /cluster/sessions", func(w http.ResponseWriter, r *http.Request) { write(w, sessions) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func serveFunc(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// closedPort is a URL nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func checkLines(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("output differs\n--- got\n%s--- want\n%s", got, want)
	}
}

func TestStatusTable(t *testing.T) {
	url := serveNode(t, testStatus(), nil)
	code, out, errb := runApp(t, "status", "--node", url)
	if code != exitOK || errb != "" {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	checkLines(t, out, `Node:            node1
ID:              3f2a9c1e5b7d4a6081f2c3d4e5f60718
Address:         127.0.0.1:4000
Domain:          shop
Started:         2h13m ago
Membership:      multicast
Sessions:        42
State transfer:  done (40 sessions in 1.2s)
Heartbeats:      16000 sent, 31990 received, 3 lost, 0 rejected

Members (2):
NAME   STATE  ADDRESS         LAST-SEEN  ID
node2  alive  127.0.0.1:4001  0.3s ago   1a2b3c4d
node3  alive  127.0.0.1:4002  2.8s ago   5e6f7a8b

Peers (2):
ADDRESS         CONNECTED  QUEUED  INFLIGHT  BYTES    SENT  FAILED  RETRIED
127.0.0.1:4001  yes        0       0         0 B      1520  0       0
127.0.0.1:4002  no         3       1         1.2 KiB  1498  2       5
`)
}

func TestStatusAlone(t *testing.T) {
	st := testStatus()
	st.Members, st.Transport.Peers = []admin.Member{}, []admin.Peer{}
	st.Local.Domain = ""
	st.Manager.TransferState = "none"
	code, out, _ := runApp(t, "status", "--node", serveNode(t, st, nil))
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"Domain:          -\n", "State transfer:  none\n", "Members (0):\nno other members\n", "Peers (0):\nno peers\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusProblemsExit1(t *testing.T) {
	tests := []struct {
		name   string
		change func(*admin.Status)
		want   string
	}{
		{"suspect member", func(s *admin.Status) { s.Members[0].State = membership.Suspect }, "member node3 (5e6f7a8b) is suspect"},
		{"transfer timed out", func(s *admin.Status) { s.Manager.TransferState = "timed out" }, "state transfer timed out"},
		{"transfer failed", func(s *admin.Status) { s.Manager.TransferState = "failed" }, "state transfer failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := testStatus()
			tc.change(&st)
			url := serveNode(t, st, nil)
			for _, args := range [][]string{{"status", "--node", url}, {"status", "--node", url, "--json"}} {
				code, out, errb := runApp(t, args...)
				if code != exitProblem {
					t.Errorf("%v: exit %d, want 1", args, code)
				}
				if out == "" {
					t.Errorf("%v: printed nothing; the status is still wanted", args)
				}
				if want := "flockctl: node " + url + ": " + tc.want + "\n"; errb != want {
					t.Errorf("%v: stderr %q, want %q", args, errb, want)
				}
			}
		})
	}
	// A suspect member is the status command's business, not members'.
	st := testStatus()
	st.Members[0].State = membership.Suspect
	code, out, _ := runApp(t, "members", "--node", serveNode(t, st, nil))
	if code != exitOK || !strings.Contains(out, "node3  suspect  127.0.0.1:4002  2.8s ago   5e6f7a8b\n") {
		t.Errorf("members: exit %d:\n%s", code, out)
	}
}

func TestStatusJSON(t *testing.T) {
	want := testStatus()
	code, out, errb := runApp(t, "status", "--node", serveNode(t, want, nil), "--json")
	if code != exitOK || errb != "" {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var got admin.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	if !strings.HasPrefix(out, "{\n  \"local\": {\n") || !strings.HasSuffix(out, "}\n") {
		t.Errorf("not indented:\n%s", out)
	}
}

func TestMembers(t *testing.T) {
	url := serveNode(t, testStatus(), nil)
	code, out, _ := runApp(t, "members", "--node", url+"/")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	checkLines(t, out, `NAME   STATE  ADDRESS         LAST-SEEN  ID
node2  alive  127.0.0.1:4001  0.3s ago   1a2b3c4d
node3  alive  127.0.0.1:4002  2.8s ago   5e6f7a8b
`)

	code, out, _ = runApp(t, "members", "--node", url, "--json")
	if code != exitOK {
		t.Fatalf("--json: exit %d", code)
	}
	var got []admin.Member
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if want := testStatus().Members; !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant %+v", got, want)
	}
}

func TestSessions(t *testing.T) {
	url := serveNode(t, testStatus(), testSessions())
	code, out, errb := runApp(t, "sessions", "--node", url)
	if code != exitOK || errb != "" {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	checkLines(t, out, `REF               VERSION  SIZE     KEYS  LAST-ACCESS  ACCESSED-BY
2c26b46b68ffc68f  17       4.0 KiB  5     1.5s ago     node2
fcde2b2edba56bf4  1        0 B      0     12s ago      node1
9f86d081884c7d65  3        120 B    2     1m35s ago    node1
3 sessions
`)

	code, out, _ = runApp(t, "sessions", "--node", url, "--json")
	if code != exitOK {
		t.Fatalf("--json: exit %d", code)
	}
	var got []manager.Info
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if want := testSessions(); !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant %+v", got, want)
	}

	code, out, _ = runApp(t, "sessions", "--node", serveNode(t, testStatus(), []manager.Info{}))
	if code != exitOK || out != "0 sessions\n" {
		t.Errorf("no sessions: exit %d, %q", code, out)
	}
}

func TestHTTPErrorExit1(t *testing.T) {
	url := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom\nsecond line", http.StatusInternalServerError)
	})
	for _, cmd := range []string{"status", "members", "sessions"} {
		code, out, errb := runApp(t, cmd, "--node", url)
		path := map[bool]string{true: "/cluster/sessions", false: "/cluster/status"}[cmd == "sessions"]
		want := "flockctl: node " + url + ": GET " + path + ": 500 Internal Server Error: boom\n"
		if code != exitProblem || out != "" || errb != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1, %q", cmd, code, out, errb, want)
		}
	}
}

func TestNotFlockExit1(t *testing.T) {
	url := serveFunc(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hello</html>")) })
	code, _, errb := runApp(t, "status", "--node", url)
	if code != exitProblem || !strings.Contains(errb, "not a flock document") {
		t.Errorf("exit %d, stderr %q", code, errb)
	}
}

func TestUnreachableExit2(t *testing.T) {
	url := closedPort(t)
	for _, cmd := range []string{"status", "members", "sessions"} {
		code, out, errb := runApp(t, cmd, "--node", url)
		want := "flockctl: node " + url + " unreachable: connection refused\n"
		if code != exitUsage || out != "" || errb != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2, %q", cmd, code, out, errb, want)
		}
	}
}

func TestTimeoutExit2(t *testing.T) {
	release := make(chan struct{})
	url := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	a, _, errb := testApp()
	a.client.Timeout = 100 * time.Millisecond
	if code := a.run(context.Background(), []string{"status", "--node", url}); code != exitUsage {
		t.Errorf("exit %d, want 2", code)
	}
	if want := "unreachable: no answer within"; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q lacks %q", errb, want)
	}
}

// TestTokenAndLookup: flockctl sends the admin token (flag or environment)
// and asks for one session by its id.
func TestTokenAndLookup(t *testing.T) {
	const token = "tok-0123456789abcdef"
	const id = "Xy7kQ2mN9pLr4sT8vW1z.node1"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster/sessions", func(w http.ResponseWriter, r *http.Request) {
		out := testSessions()
		if got := r.URL.Query().Get("id"); got != "" {
			out = out[:0]
			if got == id {
				out = testSessions()[:1]
			}
		}
		json.NewEncoder(w).Encode(out)
	})
	srv := httptest.NewServer(admin.RequireToken(token, mux))
	t.Cleanup(srv.Close)

	tests := []struct {
		name     string
		env      string
		args     []string
		code     int
		out, err string
	}{
		{"no token", "", nil, exitUsage, "", "wants its admin token"},
		{"wrong token", "", []string{"--token", "nope-0123456789abcdef"}, exitUsage, "", "wants its admin token"},
		{"token flag", "", []string{"--token", token}, exitOK, "3 sessions", ""},
		{"token from the environment", token, nil, exitOK, "3 sessions", ""},
		{"lookup", token, []string{"--id", id}, exitOK, "9f86d081884c7d65", ""},
		{"lookup of an unknown id", token, []string{"--id", "nope"}, exitOK, "0 sessions", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tc.env)
			code, out, errb := runApp(t, append([]string{"sessions", "--node", srv.URL}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errb, tc.err) {
				t.Errorf("exit %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", code, tc.code, out, tc.out, errb, tc.err)
			}
		})
	}
}
