//go:build linux

package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HTTPTimeout is the overall timeout of clients returned by Host.HTTPClient.
const HTTPTimeout = 5 * time.Second

// Do runs fn on an OS thread that has entered the host's network namespace,
// and returns fn's error. Sockets created by fn keep that namespace for their
// whole life, so fn can dial or listen "from" the host:
//
//	var ln net.Listener
//	err := h.Do(func() (err error) { ln, err = net.Listen("tcp", "198.51.100.10:0"); return })
//
// fn must do all its namespace-dependent work in the calling goroutine:
// goroutines it starts run in the test process's namespace. fn must not
// resolve host names (DNS runs on other goroutines); use IP literals.
//
// The thread is switched back to its original namespace afterwards; if that
// fails, the thread stays locked and is discarded when the goroutine ends.
// A panic in fn is re-raised in the caller after restoring the namespace.
func (h *Host) Do(fn func() error) error {
	type result struct {
		err       error
		panicked  bool
		panicking any
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := syscall.Open("/proc/self/task/"+strconv.Itoa(syscall.Gettid())+"/ns/net", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("lab: open current netns: %w", err)}
			return
		}
		defer syscall.Close(orig)
		target, err := syscall.Open(filepath.Join(netnsDir, h.NS), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("lab: open netns of %s: %w", h.Name, err)}
			return
		}
		err = setns(target)
		syscall.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("lab: enter netns of %s: %w", h.Name, err)}
			return
		}
		var res result
		func() {
			defer func() {
				if r := recover(); r != nil {
					res = result{panicked: true, panicking: r}
				}
			}()
			res.err = fn()
		}()
		if err := setns(orig); err != nil {
			// Stay locked: the runtime terminates this thread when the
			// goroutine exits, so no other goroutine ever runs in the host
			// namespace by accident.
			if !res.panicked {
				res.err = errors.Join(res.err, fmt.Errorf("lab: restore netns: %w", err))
			}
			resc <- res
			return
		}
		runtime.UnlockOSThread()
		resc <- res
	}()
	res := <-resc
	if res.panicked {
		panic(res.panicking)
	}
	return res.err
}

func setns(fd int) error { return unix.Setns(fd, unix.CLONE_NEWNET) }

// DialContext dials address (an IP literal and port, e.g. "198.51.100.11:8080")
// from inside the host's namespace. Host names are refused, so no name
// resolution can happen outside the lab. The connection keeps the host's
// namespace.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("lab: dial from %s: %w", h.Name, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("lab: dial from %s: %q is not an IP address (names are not resolved in the lab)", h.Name, host)
	}
	var conn net.Conn
	err = h.Do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	return conn, err
}

// WaitDial dials address from the host until a connection succeeds (and is
// closed again) or ctx ends; it returns the last dial error if ctx ends. Use
// it to wait for a server in another process to start listening.
func (h *Host) WaitDial(ctx context.Context, network, address string) error {
	const retry = 50 * time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("lab: %s waiting for %s: %w", h.Name, address, last)
		case <-timer.C:
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := h.DialContext(dctx, network, address)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		timer.Reset(retry)
	}
}

// HTTPClient returns an http.Client (timeout HTTPTimeout, no proxy) whose
// connections are dialed from inside the host's namespace, so the test
// process can talk to servers on 198.51.100.x. URLs must use IP addresses.
// All clients of a host share one Transport; Lab.Close closes its idle
// connections.
func (h *Host) HTTPClient() *http.Client {
	h.httpMu.Lock()
	defer h.httpMu.Unlock()
	if h.transport == nil {
		h.transport = &http.Transport{
			Proxy:                 nil,
			DialContext:           h.DialContext,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       30 * time.Second,
			TLSHandshakeTimeout:   HTTPTimeout,
			ResponseHeaderTimeout: HTTPTimeout,
		}
	}
	return &http.Client{Transport: h.transport, Timeout: HTTPTimeout}
}

func (h *Host) closeIdle() {
	h.httpMu.Lock()
	defer h.httpMu.Unlock()
	if h.transport != nil {
		h.transport.CloseIdleConnections()
	}
}

// Ping sends ICMP echo requests from the host to dst (every 250ms, through a
// raw socket opened inside the host namespace) until a reply arrives, and
// returns nil then. It returns an error when ctx ends first; without a
// deadline on ctx it gives up after 5s. It needs no ping binary.
func (h *Host) Ping(ctx context.Context, dst netip.Addr) error {
	if !dst.Is4() {
		return fmt.Errorf("lab: Ping %s: only IPv4 is supported", dst)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	var pc net.PacketConn
	if err := h.Do(func() (err error) {
		pc, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return fmt.Errorf("lab: Ping from %s: %w", h.Name, err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	id := uint16(rand.Uint32())
	to := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lab: Ping %s from %s: no reply: %w", dst, h.Name, err)
		}
		if _, err := pc.WriteTo(echoRequest(id, seq), to); err != nil {
			// e.g. EHOSTUNREACH after failed ARP or ENETUNREACH when the
			// link is down: keep trying until ctx ends.
			if ctx.Err() == nil {
				if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
					return fmt.Errorf("lab: Ping %s from %s: %v (%w)", dst, h.Name, err, ctx.Err())
				}
			}
			continue
		}
		next := time.Now().Add(250 * time.Millisecond)
		for {
			if ctx.Err() != nil {
				break
			}
			pc.SetReadDeadline(next)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break // deadline: send the next request
			}
			ip, ok := from.(*net.IPAddr)
			if !ok || !ip.IP.Equal(to.IP) || n < 8 {
				continue
			}
			b := buf[:n]
			if b[0] == 0 && b[1] == 0 && binary.BigEndian.Uint16(b[4:]) == id {
				return nil
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// echoRequest builds an ICMP echo request.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8, 8+16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = append(b, "flock-lab-ping.."...)
	binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
	return b
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
