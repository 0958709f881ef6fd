package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/membership"
)

type listenOpts struct {
	bind    string
	address string
	port    int
	dur     time.Duration
	keyFile string
}

func listenCmd(fl *flag.FlagSet) func(context.Context, *app) error {
	o := &listenOpts{}
	fl.StringVar(&o.bind, "bind", "", "IPv4 address `ADDR` of the local interface that carries the heartbeats (required)")
	fl.StringVar(&o.address, "address", "228.0.0.4", "multicast `GROUP` address")
	fl.IntVar(&o.port, "port", 45564, "multicast `PORT`")
	fl.DurationVar(&o.dur, "for", 0, "stop after `DURATION` (default: until interrupted)")
	fl.StringVar(&o.keyFile, "key-file", "", "open the sealed heartbeats of a keyed cluster with the keys in `FILE` (one base64 key a line)")
	return func(ctx context.Context, a *app) error { return a.listen(ctx, *o) }
}

// resolve checks the flags: the interface whose address is --bind, and the group.
func (o listenOpts) resolve() (*net.Interface, netip.Addr, netip.AddrPort, error) {
	var none netip.AddrPort
	if o.bind == "" {
		return nil, netip.Addr{}, none, usageErr("listen: --bind is required: the IPv4 address of the interface that carries the heartbeats")
	}
	bind, err := netip.ParseAddr(o.bind)
	if err != nil || !bind.Is4() || bind.IsUnspecified() || bind.IsMulticast() {
		return nil, bind, none, usageErr("listen: --bind %q: need the IPv4 address of a local interface", o.bind)
	}
	ifi, err := membership.InterfaceByAddr(bind)
	if err != nil {
		return nil, bind, none, &exitError{exitUsage, fmt.Errorf("listen: --bind %v: %w (give the address of the interface that connects the nodes)", bind, err)}
	}
	group, err := netip.ParseAddr(o.address)
	if err != nil || !group.Is4() || !group.IsMulticast() {
		return nil, bind, none, usageErr("listen: --address %q: need an IPv4 multicast address", o.address)
	}
	if o.port < 1 || o.port > 65535 {
		return nil, bind, none, usageErr("listen: --port %d: allowed 1..65535", o.port)
	}
	if o.dur < 0 {
		return nil, bind, none, usageErr("listen: --for %v: need a positive duration", o.dur)
	}
	return ifi, bind, netip.AddrPortFrom(group, uint16(o.port)), nil
}

// joinGroup opens a socket that receives the group on ifi only, sharing the
// port with the nodes on this host. It never sends.
func joinGroup(ctx context.Context, ifi *net.Interface, group netip.AddrPort) (*ipv4.PacketConn, error) {
	p, err := membership.JoinGroup(ctx, group, ifi)
	if err != nil {
		return nil, err
	}
	// The interface a packet arrived on, to ignore those of other networks.
	if err := p.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		p.Close()
		return nil, fmt.Errorf("control messages: %w", err)
	}
	return p, nil
}

type packet struct {
	data    []byte
	from    netip.AddrPort
	ifIndex int // 0: unknown
}

// readPackets forwards the packets of conn to out until conn is closed or
// done is.
func readPackets(conn *ipv4.PacketConn, out chan<- packet, done <-chan struct{}) error {
	buf := make([]byte, membership.MaxSealedHeartbeatLen+1) // one more: longer packets are rejected, not cut
	for {
		n, cm, src, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		p := packet{data: bytes.Clone(buf[:n])}
		if cm != nil {
			p.ifIndex = cm.IfIndex
		}
		if u, ok := src.(*net.UDPAddr); ok {
			p.from = u.AddrPort()
		}
		select {
		case out <- p:
		case <-done:
			return nil
		}
	}
}

func (a *app) listen(ctx context.Context, o listenOpts) error {
	ifi, bind, group, err := o.resolve()
	if err != nil {
		return err
	}
	conn, err := joinGroup(ctx, ifi, group)
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("listen: %v on %s (%v): %w", group, ifi.Name, bind, err)}
	}
	until := "until interrupted"
	if o.dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.dur)
		defer cancel()
		until = "for " + o.dur.String()
	}
	fmt.Fprintf(a.stdout, "listening to %v on %s (%v) %s, sending nothing\n", group, ifi.Name, bind, until)

	pkts := make(chan packet)
	readErr := make(chan error, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { readErr <- readPackets(conn, pkts, done) })
	stop := func() {
		close(done)
		conn.Close()
		wg.Wait()
	}

	w := newWatch(ifi.Index)
	if o.keyFile != "" {
		keys, err := (conf.Security{KeyFile: o.keyFile}).LoadKeys()
		if err == nil {
			w.ring, err = keyring.New(keys...)
		}
		if err != nil {
			stop()
			return usageErr("listen: --key-file: %v", err)
		}
	}
	v := &view{w: a.stdout, live: a.terminal}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case p := <-pkts:
			now := a.now()
			if line := w.observe(p, now); line != "" {
				v.event(now.Format("15:04:05.000")+"  "+line, w, now)
			}
		case <-tick.C:
			v.refresh(w, a.now())
		case err := <-readErr:
			stop()
			return &exitError{exitUsage, fmt.Errorf("listen: receive: %w", err)}
		case <-ctx.Done():
			stop()
			v.final(w, a.now())
			return nil
		}
	}
}

// source is one member heard on the group.
type source struct {
	member     membership.Member
	from       netip.AddrPort
	cmd        membership.Command
	last       time.Time
	heartbeats int
}

// Why packets were ignored, in the order of the footer.
const (
	ignForeign   = "not flock heartbeats"
	ignVersion   = "heartbeats of another version"
	ignMalformed = "malformed heartbeats"
	ignSealed    = "sealed heartbeats (give --key-file to open them)"
	ignUnsealed  = "heartbeats in the clear (refused by a keyed cluster)"
	ignKey       = "sealed heartbeats that do not open with --key-file"
	ignInterface = "received on another interface"
	ignTooMany   = "from too many members to show"
)

var ignoreOrder = []string{ignForeign, ignVersion, ignSealed, ignUnsealed, ignKey, ignMalformed, ignInterface, ignTooMany}

// maxSources bounds the table, against a sender of random member ids.
const maxSources = 1024

// watch is the state of listen: who was heard, what was ignored.
type watch struct {
	ring       *keyring.Keyring // opens sealed heartbeats; nil without --key-file
	ifIndex    int
	sources    map[membership.ID]*source
	heartbeats int
	ignored    map[string]int
}

func newWatch(ifIndex int) *watch {
	return &watch{ifIndex: ifIndex, sources: map[membership.ID]*source{}, ignored: map[string]int{}}
}

// observe counts one packet and returns a line to print when it is news: a
// member heard for the first time, or leaving.
func (w *watch) observe(p packet, now time.Time) string {
	if p.ifIndex != 0 && w.ifIndex != 0 && p.ifIndex != w.ifIndex {
		w.ignored[ignInterface]++
		return ""
	}
	h, _, err := membership.OpenHeartbeat(w.ring, p.data)
	if err != nil {
		w.ignored[ignoreReason(p.data, err)]++
		return ""
	}
	s, seen := w.sources[h.Member.ID]
	if !seen {
		if len(w.sources) >= maxSources {
			w.ignored[ignTooMany]++
			return ""
		}
		s = &source{}
		w.sources[h.Member.ID] = s
	}
	w.heartbeats++
	wasLeaving := s.cmd == membership.CommandLeaving
	s.member, s.from, s.cmd, s.last = h.Member, p.from, h.Command, now
	s.heartbeats++
	switch {
	case !seen:
		return fmt.Sprintf("%-7s  %s", "new", describe(s))
	case h.Command == membership.CommandLeaving && !wasLeaving:
		return fmt.Sprintf("%-7s  %s", "leaving", describe(s))
	}
	return ""
}

func describe(s *source) string {
	m := s.member
	return fmt.Sprintf("%s  domain %s  address %v  id %s  from %v  %v",
		cell(m.Name), cell(m.Domain), m.Addr, shortID(m.ID.String()), s.from, s.cmd)
}

func ignoreReason(data []byte, err error) string {
	switch {
	case errors.Is(err, membership.ErrForeign), !bytes.HasPrefix(data, []byte("FLKB")):
		return ignForeign
	case errors.Is(err, membership.ErrVersion):
		return ignVersion
	case errors.Is(err, membership.ErrSealed):
		return ignSealed
	case errors.Is(err, membership.ErrUnsealed):
		return ignUnsealed
	case errors.Is(err, keyring.ErrUnknownKey), errors.Is(err, keyring.ErrForged):
		return ignKey
	}
	return ignMalformed
}

// render writes the table of sources and the footer lines.
func (w *watch) render(out io.Writer, now time.Time) {
	if len(w.sources) == 0 {
		fmt.Fprintln(out, "no heartbeats yet")
	} else {
		ss := make([]*source, 0, len(w.sources))
		for _, s := range w.sources {
			ss = append(ss, s)
		}
		slices.SortFunc(ss, func(a, b *source) int {
			return cmp.Or(cmp.Compare(a.member.Name, b.member.Name), bytes.Compare(a.member.ID[:], b.member.ID[:]))
		})
		tw := newTable(out)
		row(tw, "NAME", "DOMAIN", "ADDRESS", "ID", "AGE", "CMD")
		for _, s := range ss {
			m := s.member
			row(tw, cell(m.Name), cell(m.Domain), m.Addr.String(), shortID(m.ID.String()), since(now.Sub(s.last)), s.cmd.String())
		}
		tw.Flush()
		fmt.Fprintf(out, "%s from %s\n", plural(w.heartbeats, "heartbeat"), plural(len(ss), "member"))
	}
	for _, r := range ignoreOrder {
		if n := w.ignored[r]; n > 0 {
			fmt.Fprintf(out, "%s ignored: %s\n", plural(n, "packet"), r)
		}
	}
}

// view prints listen's output. On a terminal (live) the table stays at the
// bottom and is redrawn every second, the news lines scrolling above it;
// elsewhere only the news lines are printed, and the table at the end.
type view struct {
	w     io.Writer
	live  bool
	lines int // lines of the table drawn last
}

func (v *view) event(line string, w *watch, now time.Time) {
	v.erase()
	fmt.Fprintln(v.w, line)
	if v.live {
		v.draw(w, now)
	}
}

func (v *view) refresh(w *watch, now time.Time) {
	if v.live {
		v.erase()
		v.draw(w, now)
	}
}

func (v *view) final(w *watch, now time.Time) {
	v.erase()
	w.render(v.w, now)
}

func (v *view) draw(w *watch, now time.Time) {
	var b bytes.Buffer
	w.render(&b, now)
	v.lines = bytes.Count(b.Bytes(), []byte("\n"))
	v.w.Write(b.Bytes())
}

// erase moves the cursor up over the table drawn last and clears to the
// end of the screen.
func (v *view) erase() {
	if v.live && v.lines > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA\x1b[J", v.lines)
	}
	v.lines = 0
}
