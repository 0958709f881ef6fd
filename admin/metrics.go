package admin

import (
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/refuse"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/sender"
)

// NewRegistry returns a Prometheus registry of its own (not the global
// default) holding the node's collector (see NewCollector) and the
// standard Go runtime and process collectors.
func NewRegistry(n Node) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		NewCollector(n),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return r
}

// Collector turns the statistics the node keeps anyway (membership,
// transport and manager snapshots) into Prometheus metrics at scrape time,
// so requests and messages pay nothing for them. Only the replication
// histogram is observed as Commit runs, by the manager itself.
type Collector struct {
	n Node

	// The sender counts per peer connection state, which it drops when
	// the member leaves or fails: send holds what those counted, so that
	// the counters summed over peers never go back.
	mu   sync.Mutex
	send sendCounters
}

// NewCollector returns the collector of n's metrics.
func NewCollector(n Node) *Collector {
	return &Collector{n: n, send: sendCounters{last: make(map[netip.AddrPort]sendTotals)}}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("flock_"+name, help, labels, nil)
}

var (
	descMembers  = desc("members", "Other members of the cluster this node knows of, by state (alive, suspect).", "state")
	descSessions = desc("sessions", "Sessions this node holds.")
	descCreated  = desc("sessions_created_total", "Sessions created on this node.")
	descExpired  = desc("sessions_expired_total", "Sessions that expired on this node.")
	descRejected = desc("sessions_rejected_total", "Session creations refused because max_active was reached.")

	descMsgSent   = desc("messages_sent_total", "Application messages queued for sending to members, by message type (one per member a message goes to).", "type")
	descMsgRecv   = desc("messages_received_total", "Application messages received from members, duplicates included, by message type.", "type")
	descBytesSent = desc("bytes_sent_total", "Bytes of message frames written to members, re-sends included.")
	descBytesRecv = desc("bytes_received_total", "Bytes of frames read from members, all frame types.")
	descWrites    = desc("send_writes_total", "Write system calls that sent message frames to members: messages_sent_total over this is the batching.")
	descRecvReads = desc("receiver_reads_total", "Read system calls on members' connections: frames read over this is the batching.")
	descRecvFlush = desc("receiver_writes_total", "Write system calls that sent acknowledgements and answers to members.")
	descFailures  = desc("send_failures_total", "Messages to members given up on (retries used up, timed out, queue stopped).")
	descRetries   = desc("send_retries_total", "Messages re-sent to a member on a new connection after the previous one failed.")
	descQBytes    = desc("send_queue_bytes", "Bytes queued for a member or written to it and not yet acknowledged.", "peer")
	descQMsgs     = desc("send_queue_messages", "Messages queued for a member or written to it and not yet acknowledged.", "peer")

	descReplication = desc("replication_seconds", "Time Commit took to replicate a session change to the members, in seconds, waiting as the replication mode says.")
	descTransferSec = desc("state_transfer_seconds", "Duration of this node's state transfer at start-up, in seconds (0 until it ends).")
	descTransferN   = desc("state_transfer_sessions", "Sessions this node received by its state transfer.")

	descHBSent     = desc("heartbeats_sent_total", "Membership heartbeats (alive and leaving announcements) sent.")
	descHBRecv     = desc("heartbeats_received_total", "Valid membership heartbeats received from other processes.")
	descHBLost     = desc("heartbeats_lost_total", "Heartbeats of members missed, from gaps in their sequence numbers.")
	descHBRejected = desc("heartbeats_rejected_total", "Membership packets received that were not valid heartbeats.")

	descDuplicates  = desc("receiver_duplicates_total", "Messages received again after a reconnect, recognised and not applied twice.")
	descRejectConns = desc("receiver_rejected_connections_total", "Incoming connections closed for a protocol error.")
	descHandlerErrs = desc("receiver_handler_errors_total", "Messages from members that the session manager refused or could not apply: a malformed body, a change it refused, a request from outside its view.")
	descMgrRefused  = desc("manager_refused_total", "Messages the session manager refused, by reason: not_member (a request, a pushed copy or a repair naming a node outside the view), unconfirmed (a whole copy pushed by a member that answered no round trip), implausible (a version past the bounds), gap (a change to a version this node did not hold; repaired from a member).", "reason")
	descRefused     = desc("refused_total", "Packets (membership) and connections (receiver) refused, by reason: unauthenticated, unknown_key, forged, replayed, stale, not_member, malformed, tls, identity, limit.", "component", "reason")

	allDescs = []*prometheus.Desc{
		descMembers, descSessions, descCreated, descExpired, descRejected,
		descMsgSent, descMsgRecv, descBytesSent, descBytesRecv, descWrites, descRecvReads, descRecvFlush, descFailures, descRetries, descQBytes, descQMsgs,
		descReplication, descTransferSec, descTransferN,
		descHBSent, descHBRecv, descHBLost, descHBRejected,
		descDuplicates, descRejectConns, descRefused, descHandlerErrs, descMgrRefused,
	}
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	var alive, suspect int
	for _, m := range c.n.Members() {
		switch m.State {
		case membership.Alive:
			alive++
		case membership.Suspect:
			suspect++
		}
	}
	gauge(descMembers, float64(alive), "alive")
	gauge(descMembers, float64(suspect), "suspect")

	ms := c.n.ManagerStats()
	gauge(descSessions, float64(ms.Sessions))
	counter(descCreated, ms.Created)
	counter(descExpired, ms.Expired)
	counter(descRejected, ms.Rejected)
	gauge(descTransferSec, ms.TransferDuration.Seconds())
	gauge(descTransferN, float64(ms.Transferred))
	counter(descMgrRefused, ms.NotMember, "not_member")
	counter(descMgrRefused, ms.UnconfirmedRefused, "unconfirmed")
	counter(descMgrRefused, ms.Implausible, "implausible")
	counter(descMgrRefused, ms.Gaps, "gap")

	// The snapshot is taken under the lock: two scrapes at once must not
	// fold their snapshots in the wrong order.
	c.mu.Lock()
	peers, rs := c.n.TransportStats()
	sent := c.send.update(peers)
	c.mu.Unlock()
	for t, n := range sent.byType {
		counter(descMsgSent, n, manager.TypeName(cluster.MessageType(t)))
	}
	counter(descBytesSent, sent.bytes)
	counter(descWrites, sent.writes)
	counter(descFailures, sent.failed)
	counter(descRetries, sent.retried)
	for _, p := range peers {
		gauge(descQBytes, float64(p.Bytes), p.Addr.String())
		gauge(descQMsgs, float64(p.Queued+p.Inflight), p.Addr.String())
	}
	for t, n := range rs.ByType {
		counter(descMsgRecv, n, manager.TypeName(cluster.MessageType(t)))
	}
	counter(descBytesRecv, rs.Bytes)
	counter(descRecvReads, rs.Reads)
	counter(descRecvFlush, rs.Writes)
	counter(descDuplicates, rs.Duplicates)
	counter(descRejectConns, rs.Rejected)
	counter(descHandlerErrs, rs.HandlerErrors)

	bounds, counts, sum, count := c.n.ReplicationHistogram()
	buckets := make(map[float64]uint64, len(bounds))
	for i, b := range bounds {
		if i < len(counts) {
			buckets[b] = counts[i]
		}
	}
	h, err := prometheus.NewConstHistogram(descReplication, count, sum, buckets)
	if err != nil {
		h = prometheus.NewInvalidMetric(descReplication, err)
	}
	ch <- h

	st := c.n.MembershipStats()
	counter(descHBSent, st.HeartbeatsSent)
	counter(descHBRecv, st.HeartbeatsReceived)
	counter(descHBLost, st.HeartbeatsLost)
	counter(descHBRejected, st.Rejected)
	// Every reason, zeros included, so that an alert on a rate has a
	// series to watch before the first attack.
	for _, r := range refuse.Reasons() {
		counter(descRefused, st.Refused[r.String()], "membership", r.String())
		counter(descRefused, rs.Refused[r.String()], "receiver", r.String())
	}
}

// sendTotals are the sender's counters of one peer, or a sum of them.
type sendTotals struct {
	bytes, writes, failed, retried uint64
	byType                         map[uint8]uint64
}

func totalsOf(p sender.PeerStats) sendTotals {
	return sendTotals{bytes: p.SentBytes, writes: p.Writes, failed: p.Failed, retried: p.Retried, byType: p.ByType}
}

func (t *sendTotals) add(o sendTotals) {
	t.bytes += o.bytes
	t.writes += o.writes
	t.failed += o.failed
	t.retried += o.retried
	if t.byType == nil {
		t.byType = make(map[uint8]uint64)
	}
	for k, n := range o.byType {
		t.byType[k] += n
	}
}

// covers reports whether t could be a later reading of the counters that
// read o: none went back.
func (t sendTotals) covers(o sendTotals) bool {
	if t.bytes < o.bytes || t.writes < o.writes || t.failed < o.failed || t.retried < o.retried {
		return false
	}
	for k, n := range o.byType {
		if t.byType[k] < n {
			return false
		}
	}
	return true
}

// sendCounters sums the sender's per-peer counters into counters that only
// grow. A peer's state is dropped when its member leaves or fails, and
// starts from zero if it comes back: what it had counted at the last
// scrape is kept in gone. (What it counted between the last scrape and
// going is lost: the totals may fall short, never go back.)
type sendCounters struct {
	gone sendTotals
	last map[netip.AddrPort]sendTotals
}

func (s *sendCounters) update(peers []sender.PeerStats) sendTotals {
	now := make(map[netip.AddrPort]sendTotals, len(peers))
	for _, p := range peers {
		cur := totalsOf(p)
		if prev, ok := s.last[p.Addr]; ok && !cur.covers(prev) {
			s.gone.add(prev) // forgotten and back again since the last scrape
		}
		now[p.Addr] = cur
	}
	for addr, prev := range s.last {
		if _, ok := now[addr]; !ok {
			s.gone.add(prev)
		}
	}
	s.last = now
	var sum sendTotals
	sum.add(s.gone)
	for _, t := range now {
		sum.add(t)
	}
	return sum
}
