//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// Host is one namespace of the lab.
type Host struct {
	Name  string     // the name given to AddHost
	NS    string     // network namespace name (usable with `ip netns exec`)
	IP    netip.Addr // eth0's address, 198.51.100.(10+Index)
	Index int        // position among the lab's AddHost calls, from 0

	lab    *Lab
	brVeth string // bridge-side veth end in the bridge namespace

	httpMu    sync.Mutex
	transport *http.Transport // created by HTTPClient

	tcMu sync.Mutex // serializes the tc changes of loss and multicast faults
}

func (h *Host) String() string { return h.Name + "(" + h.IP.String() + ")" }

// LinkDown sets the host's eth0 down (`ip -n NS link set eth0 down`): the
// host can no longer reach, or be reached from, any other host. Its address
// stays configured; the kernel drops the subnet and multicast routes.
func (h *Host) LinkDown(ctx context.Context) error {
	return h.do(ctx, func(ctx context.Context) error {
		h.lab.logf("lab: fault: %s link down", h)
		_, err := runCmd(ctx, "ip", "-n", h.NS, "link", "set", HostIface, "down")
		return err
	})
}

// LinkUp sets eth0 up again and restores the multicast route (which the
// kernel removed when the link went down).
func (h *Host) LinkUp(ctx context.Context) error {
	return h.do(ctx, func(ctx context.Context) error {
		h.lab.logf("lab: fault: %s link up", h)
		if _, err := runCmd(ctx, "ip", "-n", h.NS, "link", "set", HostIface, "up"); err != nil {
			return err
		}
		_, err := runCmd(ctx, "ip", "-n", h.NS, "route", "replace", "224.0.0.0/4", "dev", HostIface)
		return err
	})
}

// SetLoss makes the link between the host and the bridge drop the given
// percentage (0-100) of packets in each direction (all packets: ARP, unicast,
// multicast). It uses `tc qdisc replace dev eth0 root netem loss P%` on the
// host's eth0 and on the bridge-side veth end. If the kernel has no netem
// (sch_netem), it falls back to a clsact qdisc with a cls_bpf filter running
// a classic BPF program that drops packets at random with the same
// probability. SetLoss(ctx, 0) is ClearLoss.
//
// A packet between two hosts that both have SetLoss(p) crosses two lossy
// hops (sender's egress, receiver's ingress): it is lost with probability
// 1-(1-p)^2. Use SetEgressLoss on every host for exactly p per packet.
func (h *Host) SetLoss(ctx context.Context, percent float64) error {
	return h.setLoss(ctx, percent, "loss", h.linkEnds())
}

// SetEgressLoss is SetLoss for one direction only: packets the host sends
// are dropped with the given percentage, packets sent to it are not. Set on
// every host, each packet between two hosts is lost with exactly that
// probability. It replaces loss set earlier on the host's eth0; loss on the
// bridge-side end (from SetLoss) is left as it is. SetEgressLoss(ctx, 0)
// removes the host-side loss only.
func (h *Host) SetEgressLoss(ctx context.Context, percent float64) error {
	return h.setLoss(ctx, percent, "egress loss", h.linkEnds()[:1])
}

func (h *Host) setLoss(ctx context.Context, percent float64, what string, ends [][2]string) error {
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return fmt.Errorf("lab: SetLoss: percent %v out of range [0,100]", percent)
	}
	if percent == 0 {
		return h.clearLoss(ctx, what+" cleared", ends)
	}
	return h.do(ctx, func(ctx context.Context) error {
		h.tcMu.Lock()
		defer h.tcMu.Unlock()
		h.lab.logf("lab: fault: %s %s %v%%", h, what, percent)
		for _, end := range ends {
			if err := h.lab.setLoss(ctx, end[0], end[1], percent); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClearLoss removes what SetLoss or SetEgressLoss installed on both ends of
// the link; a multicast block (BlockMulticast) stays. It is not an error if
// there is nothing to remove.
func (h *Host) ClearLoss(ctx context.Context) error {
	return h.clearLoss(ctx, "loss cleared", h.linkEnds())
}

func (h *Host) clearLoss(ctx context.Context, what string, ends [][2]string) error {
	return h.do(ctx, func(ctx context.Context) error {
		h.tcMu.Lock()
		defer h.tcMu.Unlock()
		h.lab.logf("lab: fault: %s %s", h, what)
		var errs []error
		for _, end := range ends {
			ns, dev := end[0], end[1]
			out, err := runCmd(ctx, "tc", "-n", ns, "qdisc", "show", "dev", dev)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s := string(out)
			if strings.Contains(s, "qdisc netem ") {
				if _, err := runCmd(ctx, "tc", "-n", ns, "qdisc", "del", "dev", dev, "root"); err != nil {
					errs = append(errs, err)
				}
			}
			if strings.Contains(s, "qdisc clsact ") {
				// Only the loss filter: the qdisc may also hold the
				// multicast block, and goes when nothing is left.
				if err := removeClsactFilters(ctx, ns, dev, lossPref, "egress"); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	})
}

// linkEnds returns {namespace, device} of both ends of the host's veth pair.
func (h *Host) linkEnds() [][2]string {
	return [][2]string{{h.NS, HostIface}, {h.lab.brNS, h.brVeth}}
}

func (l *Lab) setLoss(ctx context.Context, ns, dev string, percent float64) error {
	if l.loss.Load() != lossBPF {
		pct := strconv.FormatFloat(percent, 'f', -1, 64) + "%"
		_, err := runCmd(ctx, "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", "loss", pct)
		if err == nil {
			l.loss.Store(lossNetem)
			return nil
		}
		if l.loss.Load() == lossNetem || !strings.Contains(err.Error(), "kind is unknown") {
			return err
		}
		l.logf("lab: netem is not available in this kernel; using a cls_bpf random-drop filter for loss")
		l.loss.Store(lossBPF)
	}
	if _, err := runCmd(ctx, "tc", "-n", ns, "qdisc", "replace", "dev", dev, "clsact"); err != nil {
		return err
	}
	_, err := runCmd(ctx, "tc", "-n", ns, "filter", "replace", "dev", dev, "egress",
		"pref", strconv.Itoa(lossPref), "handle", strconv.Itoa(lossPref), "bpf", "da", "bytecode", lossBytecode(percent))
	return err
}

// lossBytecode returns a classic BPF program, in tc's "bytecode" syntax, for a
// direct-action cls_bpf filter that drops (TC_ACT_SHOT = 2) a packet with
// probability percent/100 and otherwise hands it to the next filter
// (TC_ACT_UNSPEC = -1; TC_ACT_OK would skip the multicast block filter that
// may follow on the same clsact hook):
//
//	ld  rand                  ; A = random u32 (SKF_AD_OFF + SKF_AD_RANDOM)
//	jge #threshold, pass      ; A >= percent/100 * 2^32 -> pass
//	ret #2                    ; drop
//	pass: ret #-1
func lossBytecode(percent float64) string {
	if percent >= 100 {
		return "1,6 0 0 2"
	}
	threshold := uint32(math.Round(percent / 100 * (1 << 32)))
	return fmt.Sprintf("4,32 0 0 %d,53 1 0 %d,6 0 0 2,6 0 0 %d", uint32(0xfffff000+56), threshold, uint32(tcActUnspec))
}

// Exec runs a short command inside the host namespace
// (`ip netns exec NS prog args...`) and returns its combined output. The
// command is killed when ctx ends or the lab closes.
func (h *Host) Exec(ctx context.Context, prog string, args ...string) ([]byte, error) {
	var out []byte
	err := h.do(ctx, func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, prog}, args...)...)
		cmd.WaitDelay = execWaitDelay
		var err error
		out, err = cmd.CombinedOutput()
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			return fmt.Errorf("lab: exec %s on %s: %w", prog, h.Name, err)
		}
		return nil
	})
	return out, err
}

// do runs an operation of the host as an in-flight lab operation with a
// context that also ends when the lab closes.
func (h *Host) do(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := h.lab.begin(); err != nil {
		return err
	}
	defer h.lab.end()
	ctx, cancel := h.lab.opCtx(ctx)
	defer cancel()
	return fn(ctx)
}
