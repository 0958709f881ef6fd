package admin_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// The manager's message types, as TypeName names them.
const (
	typeDelta  = uint8(cluster.FirstType)
	typeExpire = uint8(cluster.FirstType + 1)
	typeTouch  = uint8(cluster.FirstType + 2)
)

// fakeNode is an admin.Node with fixed statistics; the sender's peers can
// be changed while it is scraped.
type fakeNode struct {
	mu    sync.Mutex
	peers []sender.PeerStats
}

func (f *fakeNode) Local() membership.Member {
	return membership.Member{Name: "n1", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}
}

func (f *fakeNode) Members() []membership.Status {
	return []membership.Status{
		{Member: membership.Member{Name: "n2"}, State: membership.Alive},
		{Member: membership.Member{Name: "n3"}, State: membership.Alive},
		{Member: membership.Member{Name: "n4"}, State: membership.Suspect},
	}
}

func (f *fakeNode) MembershipStats() membership.Stats {
	return membership.Stats{HeartbeatsSent: 100, HeartbeatsReceived: 200, HeartbeatsLost: 3, Rejected: 4, ForeignDomain: 99, Refused: map[string]uint64{"forged": 2}}
}

func (f *fakeNode) TransportStats() ([]sender.PeerStats, receiver.Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sender.PeerStats(nil), f.peers...), receiver.Stats{
		Connections: 9, Frames: 40, Bytes: 2048, Reads: 30, Writes: 12, Messages: 11, Duplicates: 3, Rejected: 1, HandlerErrors: 5, Refused: map[string]uint64{"unauthenticated": 5},
		ByType: map[uint8]uint64{typeDelta: 9, typeExpire: 2},
	}
}

func (f *fakeNode) setPeers(p ...sender.PeerStats) {
	f.mu.Lock()
	f.peers = p
	f.mu.Unlock()
}

// fakeID is the one session the fake node holds.
const fakeID = "0123456789abcdef0123456789abcdef.n1"

func (f *fakeNode) Sessions() []manager.Info {
	return []manager.Info{{Ref: manager.Ref("d", fakeID), Version: 3}}
}

func (f *fakeNode) SessionInfo(id string) (manager.Info, bool) {
	if id != fakeID {
		return manager.Info{}, false
	}
	return f.Sessions()[0], true
}

func (f *fakeNode) ManagerStats() manager.Stats {
	return manager.Stats{Sessions: 7, Created: 10, Expired: 2, Rejected: 1, Transferred: 5, TransferDuration: 1500 * time.Millisecond,
		NotMember: 4, Gaps: 3}
}

func (f *fakeNode) Ready() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}
func (f *fakeNode) CatchingUp() bool { return false }

func (f *fakeNode) ReplicationHistogram() ([]float64, []uint64, float64, uint64) {
	return []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5},
		[]uint64{1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 5}, 1.25, 6
}

func newFakeNode() *fakeNode {
	f := &fakeNode{}
	f.setPeers(
		sender.PeerStats{
			Addr: netip.MustParseAddrPort("127.0.0.1:4001"), Connected: true, Queued: 2, Inflight: 1, Bytes: 300,
			Sent: 8, SentBytes: 1000, Writes: 4, Failed: 1, Retried: 2,
			ByType: map[uint8]uint64{typeDelta: 5, typeTouch: 1},
		},
		sender.PeerStats{
			Addr: netip.MustParseAddrPort("127.0.0.1:4002"), Connected: true,
			Sent: 7, SentBytes: 500, Writes: 3, Retried: 1,
			ByType: map[uint8]uint64{typeDelta: 3, 200: 4},
		},
	)
	return f
}

// flockNames are the metric families the collector exports.
var flockNames = []string{
	"flock_members", "flock_sessions", "flock_sessions_created_total", "flock_sessions_expired_total", "flock_sessions_rejected_total",
	"flock_messages_sent_total", "flock_messages_received_total", "flock_bytes_sent_total", "flock_bytes_received_total",
	"flock_send_writes_total", "flock_receiver_reads_total", "flock_receiver_writes_total",
	"flock_send_failures_total", "flock_send_retries_total", "flock_send_queue_bytes", "flock_send_queue_messages",
	"flock_replication_seconds", "flock_state_transfer_seconds", "flock_state_transfer_sessions",
	"flock_heartbeats_sent_total", "flock_heartbeats_received_total", "flock_heartbeats_lost_total", "flock_heartbeats_rejected_total",
	"flock_receiver_duplicates_total", "flock_receiver_rejected_connections_total", "flock_refused_total",
	"flock_receiver_handler_errors_total", "flock_manager_refused_total",
}

const fakeExposition = `
# HELP flock_members Other members of the cluster this node knows of, by state (alive, suspect).
# TYPE flock_members gauge
flock_members{state="alive"} 2
flock_members{state="suspect"} 1
# HELP flock_sessions Sessions this node holds.
# TYPE flock_sessions gauge
flock_sessions 7
# HELP flock_sessions_created_total Sessions created on this node.
# TYPE flock_sessions_created_total counter
flock_sessions_created_total 10
# HELP flock_sessions_expired_total Sessions that expired on this node.
# TYPE flock_sessions_expired_total counter
flock_sessions_expired_total 2
# HELP flock_sessions_rejected_total Session creations refused because max_active was reached.
# TYPE flock_sessions_rejected_total counter
flock_sessions_rejected_total 1
# HELP flock_messages_sent_total Application messages queued for sending to members, by message type (one per member a message goes to).
# TYPE flock_messages_sent_total counter
flock_messages_sent_total{type="delta"} 8
flock_messages_sent_total{type="touch"} 1
flock_messages_sent_total{type="type-200"} 4
# HELP flock_messages_received_total Application messages received from members, duplicates included, by message type.
# TYPE flock_messages_received_total counter
flock_messages_received_total{type="delta"} 9
flock_messages_received_total{type="expire"} 2
# HELP flock_bytes_sent_total Bytes of message frames written to members, re-sends included.
# TYPE flock_bytes_sent_total counter
flock_bytes_sent_total 1500
# HELP flock_bytes_received_total Bytes of frames read from members, all frame types.
# TYPE flock_bytes_received_total counter
flock_bytes_received_total 2048
# HELP flock_send_writes_total Write system calls that sent message frames to members: messages_sent_total over this is the batching.
# TYPE flock_send_writes_total counter
flock_send_writes_total 7
# HELP flock_receiver_reads_total Read system calls on members' connections: frames read over this is the batching.
# TYPE flock_receiver_reads_total counter
flock_receiver_reads_total 30
# HELP flock_receiver_writes_total Write system calls that sent acknowledgements and answers to members.
# TYPE flock_receiver_writes_total counter
flock_receiver_writes_total 12
# HELP flock_send_failures_total Messages to members given up on (retries used up, timed out, queue stopped).
# TYPE flock_send_failures_total counter
flock_send_failures_total 1
# HELP flock_send_retries_total Messages re-sent to a member on a new connection after the previous one failed.
# TYPE flock_send_retries_total counter
flock_send_retries_total 3
# HELP flock_send_queue_bytes Bytes queued for a member or written to it and not yet acknowledged.
# TYPE flock_send_queue_bytes gauge
flock_send_queue_bytes{peer="127.0.0.1:4001"} 300
flock_send_queue_bytes{peer="127.0.0.1:4002"} 0
# HELP flock_send_queue_messages Messages queued for a member or written to it and not yet acknowledged.
# TYPE flock_send_queue_messages gauge
flock_send_queue_messages{peer="127.0.0.1:4001"} 3
flock_send_queue_messages{peer="127.0.0.1:4002"} 0
# HELP flock_replication_seconds Time Commit took to replicate a session change to the members, in seconds, waiting as the replication mode says.
# TYPE flock_replication_seconds histogram
flock_replication_seconds_bucket{le="5e-05"} 1
flock_replication_seconds_bucket{le="0.0001"} 1
flock_replication_seconds_bucket{le="0.00025"} 2
flock_replication_seconds_bucket{le="0.0005"} 2
flock_replication_seconds_bucket{le="0.001"} 3
flock_replication_seconds_bucket{le="0.0025"} 3
flock_replication_seconds_bucket{le="0.005"} 3
flock_replication_seconds_bucket{le="0.01"} 3
flock_replication_seconds_bucket{le="0.025"} 3
flock_replication_seconds_bucket{le="0.05"} 3
flock_replication_seconds_bucket{le="0.1"} 3
flock_replication_seconds_bucket{le="0.25"} 3
flock_replication_seconds_bucket{le="0.5"} 4
flock_replication_seconds_bucket{le="1"} 4
flock_replication_seconds_bucket{le="2.5"} 4
flock_replication_seconds_bucket{le="5"} 5
flock_replication_seconds_bucket{le="+Inf"} 6
flock_replication_seconds_sum 1.25
flock_replication_seconds_count 6
# HELP flock_state_transfer_seconds Duration of this node's state transfer at start-up, in seconds (0 until it ends).
# TYPE flock_state_transfer_seconds gauge
flock_state_transfer_seconds 1.5
# HELP flock_state_transfer_sessions Sessions this node received by its state transfer.
# TYPE flock_state_transfer_sessions gauge
flock_state_transfer_sessions 5
# HELP flock_heartbeats_sent_total Membership heartbeats (alive and leaving announcements) sent.
# TYPE flock_heartbeats_sent_total counter
flock_heartbeats_sent_total 100
# HELP flock_heartbeats_received_total Valid membership heartbeats received from other processes.
# TYPE flock_heartbeats_received_total counter
flock_heartbeats_received_total 200
# HELP flock_heartbeats_lost_total Heartbeats of members missed, from gaps in their sequence numbers.
# TYPE flock_heartbeats_lost_total counter
flock_heartbeats_lost_total 3
# HELP flock_heartbeats_rejected_total Membership packets received that were not valid heartbeats.
# TYPE flock_heartbeats_rejected_total counter
flock_heartbeats_rejected_total 4
# HELP flock_receiver_duplicates_total Messages received again after a reconnect, recognised and not applied twice.
# TYPE flock_receiver_duplicates_total counter
flock_receiver_duplicates_total 3
# HELP flock_receiver_handler_errors_total Messages from members that the session manager refused or could not apply: a malformed body, a change it refused, a request from outside its view.
# TYPE flock_receiver_handler_errors_total counter
flock_receiver_handler_errors_total 5
# HELP flock_manager_refused_total Messages the session manager refused, by reason: not_member (a request, a pushed copy or a repair naming a node outside the view), unconfirmed (a whole copy pushed by a member that answered no round trip), implausible (a version past the bounds), gap (a change to a version this node did not hold; repaired from a member).
# TYPE flock_manager_refused_total counter
flock_manager_refused_total{reason="gap"} 3
flock_manager_refused_total{reason="implausible"} 0
flock_manager_refused_total{reason="not_member"} 4
flock_manager_refused_total{reason="unconfirmed"} 0
# HELP flock_receiver_rejected_connections_total Incoming connections closed for a protocol error.
# TYPE flock_receiver_rejected_connections_total counter
flock_receiver_rejected_connections_total 1
# HELP flock_refused_total Packets (membership) and connections (receiver) refused, by reason: unauthenticated, unknown_key, forged, replayed, stale, not_member, malformed, tls, identity, limit.
# TYPE flock_refused_total counter
flock_refused_total{component="membership",reason="forged"} 2
flock_refused_total{component="membership",reason="identity"} 0
flock_refused_total{component="membership",reason="limit"} 0
flock_refused_total{component="membership",reason="malformed"} 0
flock_refused_total{component="membership",reason="not_member"} 0
flock_refused_total{component="membership",reason="replayed"} 0
flock_refused_total{component="membership",reason="stale"} 0
flock_refused_total{component="membership",reason="tls"} 0
flock_refused_total{component="membership",reason="unauthenticated"} 0
flock_refused_total{component="membership",reason="unknown_key"} 0
flock_refused_total{component="receiver",reason="forged"} 0
flock_refused_total{component="receiver",reason="identity"} 0
flock_refused_total{component="receiver",reason="limit"} 0
flock_refused_total{component="receiver",reason="malformed"} 0
flock_refused_total{component="receiver",reason="not_member"} 0
flock_refused_total{component="receiver",reason="replayed"} 0
flock_refused_total{component="receiver",reason="stale"} 0
flock_refused_total{component="receiver",reason="tls"} 0
flock_refused_total{component="receiver",reason="unauthenticated"} 5
flock_refused_total{component="receiver",reason="unknown_key"} 0
`

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want the text exposition format", ct)
	}
	return string(b)
}

// flockLines are the samples of the flock_ families in an exposition.
func flockLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "flock_") {
			out = append(out, l)
		}
	}
	return out
}

func TestMetricsEndpoint(t *testing.T) {
	srv := httptest.NewServer(admin.NewMux(newFakeNode(), "static"))
	defer srv.Close()

	if err := testutil.ScrapeAndCompare(srv.URL+"/metrics", strings.NewReader(fakeExposition), flockNames...); err != nil {
		t.Error(err)
	}

	first := scrape(t, srv.URL+"/metrics")
	want := []string{"go_goroutines", "go_memstats_heap_alloc_bytes"}
	if runtime.GOOS == "linux" {
		want = append(want, "process_cpu_seconds_total", "process_resident_memory_bytes")
	}
	for _, name := range append(want, flockNames...) {
		if !strings.Contains(first, "\n# TYPE "+name+" ") {
			t.Errorf("no family %s in the exposition", name)
		}
	}

	// The node's statistics did not change: neither do the metrics.
	second := scrape(t, srv.URL+"/metrics")
	if a, b := strings.Join(flockLines(first), "\n"), strings.Join(flockLines(second), "\n"); a != b {
		t.Errorf("two scrapes differ:\n%s\n---\n%s", a, b)
	}
	if n := len(flockLines(first)); n != 74 {
		t.Errorf("%d flock_ samples, want 74:\n%s", n, strings.Join(flockLines(first), "\n"))
	}

	resp, err := http.Post(srv.URL+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
}

// TestRegistriesAreSeparate: each node has a registry of its own, so two
// in one process do not clash (no global registry).
func TestRegistriesAreSeparate(t *testing.T) {
	a, b := admin.NewRegistry(newFakeNode()), admin.NewRegistry(newFakeNode())
	if n, err := testutil.GatherAndCount(a, "flock_sessions"); err != nil || n != 1 {
		t.Errorf("first registry: %d flock_sessions, %v", n, err)
	}
	if n, err := testutil.GatherAndCount(b, "flock_sessions"); err != nil || n != 1 {
		t.Errorf("second registry: %d flock_sessions, %v", n, err)
	}
}

const sendHelp = `
# HELP flock_bytes_sent_total Bytes of message frames written to members, re-sends included.
# TYPE flock_bytes_sent_total counter
flock_bytes_sent_total %d
# HELP flock_send_failures_total Messages to members given up on (retries used up, timed out, queue stopped).
# TYPE flock_send_failures_total counter
flock_send_failures_total %d
# HELP flock_messages_sent_total Application messages queued for sending to members, by message type (one per member a message goes to).
# TYPE flock_messages_sent_total counter
flock_messages_sent_total{type="delta"} %d
`

// TestSendCountersNeverGoBack: the sender drops a peer's counters when its
// member goes; the totals keep what it had counted.
func TestSendCountersNeverGoBack(t *testing.T) {
	f := &fakeNode{}
	c := admin.NewCollector(f)
	a, b := netip.MustParseAddrPort("127.0.0.1:4001"), netip.MustParseAddrPort("127.0.0.1:4002")
	peer := func(addr netip.AddrPort, bytes, failed, deltas uint64) sender.PeerStats {
		return sender.PeerStats{Addr: addr, SentBytes: bytes, Failed: failed, ByType: map[uint8]uint64{typeDelta: deltas}}
	}
	check := func(step string, bytes, failed, deltas uint64) {
		t.Helper()
		want := fmt.Sprintf(sendHelp, bytes, failed, deltas)
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "flock_bytes_sent_total", "flock_send_failures_total", "flock_messages_sent_total"); err != nil {
			t.Errorf("%s: %v", step, err)
		}
	}

	f.setPeers(peer(a, 100, 1, 2), peer(b, 50, 0, 1))
	check("two peers", 150, 1, 3)
	f.setPeers(peer(b, 60, 0, 2))
	check("a forgotten", 160, 1, 4)
	f.setPeers(peer(a, 10, 0, 1), peer(b, 60, 0, 2))
	check("a back", 170, 1, 5)
	f.setPeers(peer(a, 5, 0, 1), peer(b, 60, 0, 2))
	check("a forgotten and back between scrapes", 175, 1, 6)
	f.setPeers()
	check("all gone", 175, 1, 6)
}

// TestConcurrentScrapes is for the race detector.
func TestConcurrentScrapes(t *testing.T) {
	f := newFakeNode()
	srv := httptest.NewServer(admin.NewMux(f, "static"))
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				if (i+j)%2 == 0 {
					f.setPeers(newFakeNode().peers...)
				}
				resp, err := http.Get(srv.URL + "/metrics")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

// TestMetricsOfRealNodes runs two nodes on loopback and checks what a
// replicated commit shows in their metrics.
func TestMetricsOfRealNodes(t *testing.T) {
	leakcheck.Check(t)
	ctx := context.Background()
	var ports []int
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	var nodes []*flock.Node
	for i, port := range ports {
		cfg := conf.Default()
		cfg.Server.Name = fmt.Sprintf("n%d", i+1)
		cfg.Cluster.Membership.Type = "static"
		for _, p := range ports {
			cfg.Cluster.Membership.Static.Members = append(cfg.Cluster.Membership.Static.Members, fmt.Sprintf("127.0.0.1:%d", p))
		}
		cfg.Cluster.Membership.Frequency = conf.Duration{Duration: 50 * time.Millisecond}
		cfg.Cluster.Membership.DropTime = conf.Duration{Duration: 2 * time.Second}
		cfg.Cluster.Receiver.Port, cfg.Cluster.Receiver.AutoBind = port, 1
		n, err := flock.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n.Stop(ctx)
		})
		nodes = append(nodes, n)
	}
	// Each manager replicates to the members it has heard of: wait until
	// both know each other.
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range nodes {
		for len(n.Members()) == 0 || n.ManagerStats().Members == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees no member", n.Local().Name)
			}
			time.Sleep(10 * time.Millisecond) // setup: polling a counter, no event to await
		}
		select {
		case <-n.Ready():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not ready", n.Local().Name)
		}
	}

	n1, n2 := nodes[0], nodes[1]
	s, err := n1.Manager().Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set("k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Manager().Commit(ctx, s); err != nil { // sync: n2 has applied it
		t.Fatal(err)
	}

	srv1 := httptest.NewServer(admin.NewMux(n1, "static"))
	defer srv1.Close()
	srv2 := httptest.NewServer(admin.NewMux(n2, "static"))
	defer srv2.Close()
	m1, m2 := scrape(t, srv1.URL+"/metrics"), scrape(t, srv2.URL+"/metrics")
	for _, want := range []string{
		`flock_members{state="alive"} 1`,
		`flock_sessions 1`,
		`flock_sessions_created_total 1`,
		`flock_messages_sent_total{type="delta"} 1`,
		`flock_replication_seconds_count 1`,
		`flock_replication_seconds_bucket{le="+Inf"} 1`,
		`flock_replication_seconds_bucket{le="5"} 1`,
		`flock_send_queue_messages{peer="` + n2.Local().Addr.String() + `"}`,
	} {
		if !strings.Contains(m1, "\n"+want) {
			t.Errorf("n1: no %s in\n%s", want, strings.Join(flockLines(m1), "\n"))
		}
	}
	if n := strings.Count(m1, "flock_replication_seconds_bucket{"); n != 17 {
		t.Errorf("n1: %d histogram buckets, want 16 and +Inf", n)
	}
	for _, want := range []string{
		`flock_members{state="alive"} 1`,
		`flock_sessions 1`,
		`flock_sessions_created_total 0`,
		`flock_messages_received_total{type="delta"} 1`,
		`flock_replication_seconds_count 0`,
	} {
		if !strings.Contains(m2, "\n"+want) {
			t.Errorf("n2: no %s in\n%s", want, strings.Join(flockLines(m2), "\n"))
		}
	}
}
