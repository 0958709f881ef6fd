//go:build linux

package lab

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"
)

// Filters of the lab on a clsact qdisc. Loss (cls_bpf fallback, egress) and
// the multicast block (ingress and egress) share one clsact qdisc per
// device, each at its own preference, so either can be removed without
// touching the other. Every lab filter returns TC_ACT_UNSPEC for packets it
// does not drop, so the next filter still sees them.
const (
	lossPref  = 1 // egress loss filter (handle 1)
	mcastPref = 2 // multicast block filters (handle 2)
)

// Direct-action return codes of cls_bpf (linux/pkt_cls.h).
const (
	tcActUnspec = 0xffffffff // TC_ACT_UNSPEC (-1): continue with the next filter
	tcActShot   = 2          // TC_ACT_SHOT: drop
)

// Constants of the multicast filter program.
const (
	packetLoopback = 5          // PACKET_LOOPBACK (linux/if_packet.h)
	etherTypeIPv4  = 0x0800     // ETH_P_IP
	skfNetOff      = 0xfff00000 // SKF_NET_OFF (-0x100000): offsets relative to the network header
	ipv4DstOff     = 16         // destination address in the IPv4 header
)

// mcastBytecode is a classic BPF program, in tc's "bytecode" syntax, for a
// direct-action cls_bpf filter that drops IPv4 packets to 224.0.0.0/4
// (TC_ACT_SHOT) and hands everything else to the next filter (TC_ACT_UNSPEC).
// Multicast the host loops back to its own sockets (IP_MULTICAST_LOOP,
// pkt_type PACKET_LOOPBACK) never crosses the link and is not dropped. It
// reads skb->protocol and the network header, so it works at ingress and
// egress whatever the link-layer header.
var mcastBytecode = mustBytecode([]bpf.Instruction{
	/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
	/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: packetLoopback, SkipTrue: 6},
	/* 2 */ bpf.LoadExtension{Num: bpf.ExtProto},
	/* 3 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeIPv4, SkipTrue: 4},
	/* 4 */ bpf.LoadAbsolute{Off: skfNetOff + ipv4DstOff, Size: 4},
	/* 5 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0000000},
	/* 6 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0xe0000000, SkipFalse: 1},
	/* 7 */ bpf.RetConstant{Val: tcActShot},
	/* 8 */ bpf.RetConstant{Val: tcActUnspec},
})

func mustBytecode(prog []bpf.Instruction) string {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	parts := []string{strconv.Itoa(len(raw))}
	for _, ins := range raw {
		parts = append(parts, fmt.Sprintf("%d %d %d %d", ins.Op, ins.Jt, ins.Jf, ins.K))
	}
	return strings.Join(parts, ",")
}

// BlockMulticast drops every multicast packet (IPv4 destination
// 224.0.0.0/4) the host sends or receives on its link, while unicast (TCP,
// ARP, ICMP) keeps flowing: the fault of a switch that stops forwarding
// multicast. IGMP to 224.0.0.0/24 is dropped as well; multicast the host
// loops back to its own sockets is not. It installs a clsact qdisc on the
// host's eth0 (in the host namespace) with a cls_bpf filter on ingress and
// egress; it coexists with SetLoss and SetEgressLoss. Idempotent.
func (h *Host) BlockMulticast(ctx context.Context) error {
	return h.do(ctx, func(ctx context.Context) error {
		h.tcMu.Lock()
		defer h.tcMu.Unlock()
		h.lab.logf("lab: fault: %s multicast blocked", h)
		if _, err := runCmd(ctx, "tc", "-n", h.NS, "qdisc", "replace", "dev", HostIface, "clsact"); err != nil {
			return err
		}
		for _, dir := range []string{"ingress", "egress"} {
			if _, err := runCmd(ctx, "tc", "-n", h.NS, "filter", "replace", "dev", HostIface, dir,
				"pref", strconv.Itoa(mcastPref), "handle", strconv.Itoa(mcastPref), "bpf", "da", "bytecode", mcastBytecode); err != nil {
				return err
			}
		}
		return nil
	})
}

// UnblockMulticast removes what BlockMulticast installed; loss set by
// SetLoss or SetEgressLoss stays. It is not an error if multicast is not
// blocked.
func (h *Host) UnblockMulticast(ctx context.Context) error {
	return h.do(ctx, func(ctx context.Context) error {
		h.tcMu.Lock()
		defer h.tcMu.Unlock()
		h.lab.logf("lab: fault: %s multicast unblocked", h)
		out, err := runCmd(ctx, "tc", "-n", h.NS, "qdisc", "show", "dev", HostIface)
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "qdisc clsact ") {
			return nil
		}
		return removeClsactFilters(ctx, h.NS, HostIface, mcastPref, "ingress", "egress")
	})
}

// removeClsactFilters deletes the filters with preference pref from the
// given directions of dev's clsact qdisc (those that exist), then deletes
// the qdisc if no filter is left in either direction. The qdisc must exist.
func removeClsactFilters(ctx context.Context, ns, dev string, pref int, dirs ...string) error {
	left := false
	for _, dir := range []string{"ingress", "egress"} {
		prefs, err := filterPrefs(ctx, ns, dev, dir)
		if err != nil {
			return err
		}
		for _, p := range prefs {
			if p != pref || !slices.Contains(dirs, dir) {
				left = true
				continue
			}
			if _, err := runCmd(ctx, "tc", "-n", ns, "filter", "del", "dev", dev, dir, "pref", strconv.Itoa(p)); err != nil {
				return err
			}
		}
	}
	if left {
		return nil
	}
	_, err := runCmd(ctx, "tc", "-n", ns, "qdisc", "del", "dev", dev, "clsact")
	return err
}

// filterPrefs returns the distinct preferences of the filters on one
// direction ("ingress" or "egress") of dev's clsact qdisc.
func filterPrefs(ctx context.Context, ns, dev, dir string) ([]int, error) {
	out, err := runCmd(ctx, "tc", "-n", ns, "filter", "show", "dev", dev, dir)
	if err != nil {
		return nil, err
	}
	var prefs []int
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "pref" {
				continue
			}
			p, err := strconv.Atoi(f[i+1])
			if err != nil {
				return nil, fmt.Errorf("lab: tc -n %s filter show dev %s %s: bad line %q", ns, dev, dir, line)
			}
			if !slices.Contains(prefs, p) {
				prefs = append(prefs, p)
			}
			break
		}
	}
	return prefs, nil
}
