package sender_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// TestRequest: a request returns its handler's reply, or its handler's
// error as a *RemoteError inside a *sender.Error naming the peer.
func TestRequest(t *testing.T) {
	leakcheck.Check(t)
	n := startReceiver(t, "answerer", func(_ context.Context, m receiver.Message) ([]byte, error) {
		switch p := string(m.Payload); {
		case p == "who":
			return []byte(m.From.Name + " " + m.From.ID.String()), nil
		case p == "nothing":
			return nil, nil
		case p == "empty":
			return []byte{}, nil
		case p == "fail":
			return []byte("dropped with the error"), errors.New("cannot answer")
		case strings.HasPrefix(p, "size "):
			size, err := strconv.Atoi(p[len("size "):])
			return bytes.Repeat([]byte{'r'}, size), err
		}
		return append([]byte("re: "), m.Payload...), nil
	})
	s := newSender(t)
	caller := peerInfo("sender", netip.AddrPort{})
	tests := []struct {
		name       string
		t          uint8
		payload    string
		want       []byte
		wantRemote string // a substring of the *RemoteError's message
	}{
		{"echo", typeData, "hello", []byte("re: hello"), ""},
		{"the handler sees the caller", typeData, "who", []byte("sender " + caller.ID.String()), ""},
		{"no reply", typeData, "nothing", nil, ""},
		{"empty reply", typeData, "empty", nil, ""},
		{"64 KiB reply", typeData, "size 65536", bytes.Repeat([]byte{'r'}, 65536), ""},
		{"4 MiB reply", typeData, "size 4194304", bytes.Repeat([]byte{'r'}, 4<<20), ""},
		{"handler error", typeData, "fail", nil, "cannot answer"},
		{"no handler for the type", typeData + 1, "x", nil, fmt.Sprintf("no handler for message type %d", typeData+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reply, err := s.Request(context.Background(), n.addr, tc.t, []byte(tc.payload))
			if tc.wantRemote == "" {
				if err != nil {
					t.Fatalf("Request: %v", err)
				}
				if !bytes.Equal(reply, tc.want) || (reply == nil) != (tc.want == nil) {
					t.Fatalf("reply %.40q (%d bytes), want %.40q (%d bytes)", reply, len(reply), tc.want, len(tc.want))
				}
				return
			}
			var re *sender.RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, tc.wantRemote) {
				t.Fatalf("Request = %v, want a *sender.RemoteError with %q", err, tc.wantRemote)
			}
			if errs := peerErrs(t, err); len(errs) != 1 || errs[n.addr] == nil {
				t.Errorf("Request = %v, want an error naming %v only", err, n.addr)
			}
			if reply != nil {
				t.Errorf("a failed request returned a reply: %q", reply)
			}
		})
	}
	if st, _ := peerStats(s, n.addr); st.Reconnects != 0 || st.Failed != 2 {
		t.Errorf("stats %+v: want no reconnect and the 2 failed requests", st)
	}
}

// TestRequestInOrder: a request takes its place in the stream to its peer:
// its handler runs after every message sent before it.
func TestRequestInOrder(t *testing.T) {
	leakcheck.Check(t)
	var seen atomic.Int64
	n := startReceiver(t, "counter", func(_ context.Context, m receiver.Message) ([]byte, error) {
		if string(m.Payload) == "how many?" {
			return strconv.AppendInt(nil, seen.Load(), 10), nil
		}
		seen.Add(1)
		return nil, nil
	})
	s := newSender(t)
	to := []netip.AddrPort{n.addr}
	for round := 1; round <= 5; round++ {
		for i := range 20 {
			mode := []sender.Mode{sender.Async, sender.Ack}[i%2]
			if err := s.Send(context.Background(), to, typeData, []byte("x"), mode); err != nil {
				t.Fatal(err)
			}
		}
		reply, err := s.Request(context.Background(), n.addr, typeData, []byte("how many?"))
		if err != nil {
			t.Fatal(err)
		}
		if want := strconv.Itoa(20 * round); string(reply) != want {
			t.Fatalf("round %d: the handler had seen %s messages before the request, want %s", round, reply, want)
		}
	}
}

// TestRequestRefused: what the transport will not send fails at once,
// without a connection.
func TestRequestRefused(t *testing.T) {
	leakcheck.Check(t)
	s := newSender(t)
	addr := netip.MustParseAddrPort("127.0.0.1:1") // never dialled
	tests := []struct {
		name string
		do   func() error
	}{
		{"request of a control type", func() error {
			_, err := s.Request(context.Background(), addr, sender.FirstType-1, nil)
			return err
		}},
		{"request of type 0", func() error {
			_, err := s.Request(context.Background(), addr, 0, nil)
			return err
		}},
		{"send of a control type", func() error {
			return s.Send(context.Background(), []netip.AddrPort{addr}, 2, nil, sender.Sync)
		}},
		{"send in an unknown mode", func() error {
			return s.Send(context.Background(), []netip.AddrPort{addr}, typeData, nil, sender.Mode(3))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var se *sender.Error
			if err == nil || errors.As(err, &se) {
				t.Fatalf("err = %v, want a refusal that names no peer", err)
			}
		})
	}
	if st := s.Stats(); len(st) != 0 {
		t.Errorf("a refused send made peer state: %+v", st)
	}
}

// TestRequestReplyTooLarge: a reply that does not fit in a frame fails its
// request with a clear error, promptly, without costing the connection
// and without the request being applied twice; the next request is served.
func TestRequestReplyTooLarge(t *testing.T) {
	const small = 64 << 10
	tests := []struct {
		name                 string
		receiverMax, sendMax int // 0: the default
		reply                int
		check                func(t *testing.T, err error)
	}{
		{"larger than the receiver's MaxFrame", small, 0, small + 1, func(t *testing.T, err error) {
			var re *sender.RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, fmt.Sprintf("reply of %d bytes", small+1)) ||
				!strings.Contains(re.Msg, fmt.Sprintf("at most %d bytes", small)) {
				t.Errorf("Request = %v, want a *sender.RemoteError saying the reply does not fit", err)
			}
		}},
		{"larger than the sender's MaxFrame", 0, small, small + 1, func(t *testing.T, err error) {
			if !errors.Is(err, sender.ErrReplyTooLarge) {
				t.Errorf("Request = %v, want ErrReplyTooLarge", err)
			}
		}},
		{"far larger than the sender's MaxFrame", 0, 4 << 10, 8 << 20, func(t *testing.T, err error) {
			if !errors.Is(err, sender.ErrReplyTooLarge) || !strings.Contains(err.Error(), "at most 4096") {
				t.Errorf("Request = %v, want ErrReplyTooLarge naming the maximum", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			var applied atomic.Int64
			n := startReceiver(t, "verbose", func(_ context.Context, m receiver.Message) ([]byte, error) {
				applied.Add(1)
				if string(m.Payload) == "small" {
					return []byte("fits"), nil
				}
				return make([]byte, tc.reply), nil
			}, func(c *receiver.Config) {
				if tc.receiverMax > 0 {
					c.MaxFrame = tc.receiverMax
				}
			})
			var failures atomic.Int64
			s := newSender(t, func(c *sender.Config) {
				c.Timeout = time.Minute // only a hang could reach it
				if tc.sendMax > 0 {
					c.MaxFrame = tc.sendMax
				}
				c.OnFailure = func(netip.AddrPort, error) { failures.Add(1) }
			})
			start := time.Now()
			reply, err := s.Request(context.Background(), n.addr, typeData, []byte("large"))
			if took := time.Since(start); took > margin {
				t.Errorf("the request failed after %v", took)
			}
			if errs := peerErrs(t, err); errs[n.addr] == nil {
				t.Fatalf("Request = %d bytes, %v; want it to fail", len(reply), err)
			}
			tc.check(t, err)
			if reply, err := s.Request(context.Background(), n.addr, typeData, []byte("small")); err != nil || string(reply) != "fits" {
				t.Fatalf("the next request: %q, %v", reply, err)
			}
			if got := applied.Load(); got != 2 {
				t.Errorf("the handler ran %d times for 2 requests", got)
			}
			if st, _ := peerStats(s, n.addr); st.Reconnects != 0 || st.Retried != 0 {
				t.Errorf("the large reply cost the connection: %+v", st)
			}
			if got := failures.Load(); got != 0 {
				t.Errorf("OnFailure called %d times for a live peer", got)
			}
		})
	}
}

// TestRequestResentGetsSameAnswer: a request applied, whose answer is lost
// with its connection, is re-sent on a new one; the copy is not applied
// again, and gets the original's answer.
func TestRequestResentGetsSameAnswer(t *testing.T) {
	tests := []struct {
		name       string
		fail       bool
		wantReply  string
		wantRemote string
	}{
		{"reply", false, "answer #1", ""},
		{"handler error", true, "", "failure #1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			var calls atomic.Int64
			var px *proxy
			rcv := startReceiver(t, "r", func(_ context.Context, m receiver.Message) ([]byte, error) {
				n := calls.Add(1)
				if n == 1 {
					// Applied, but the ack will find no connection: the
					// sender must re-send.
					px.Cut()
				}
				if tc.fail {
					return nil, fmt.Errorf("failure #%d", n)
				}
				return fmt.Appendf(nil, "answer #%d", n), nil
			})
			px = startProxy(t, rcv.addr)
			s := newSender(t, func(c *sender.Config) { c.MaxRetries = 1 })

			reply, err := s.Request(context.Background(), px.addr(), typeData, []byte("question"))
			if tc.wantRemote == "" {
				if err != nil || string(reply) != tc.wantReply {
					t.Fatalf("Request = %q, %v; want %q", reply, err, tc.wantReply)
				}
			} else {
				var re *sender.RemoteError
				if !errors.As(err, &re) || re.Msg != tc.wantRemote {
					t.Fatalf("Request = %q, %v; want the remote error %q", reply, err, tc.wantRemote)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("the handler ran %d times", n)
			}
			st, _ := peerStats(s, px.addr())
			if st.Retried != 1 || st.Reconnects != 1 {
				t.Errorf("sender %+v: want the request re-sent once, on a new connection", st)
			}
			if d := rcv.r.Stats().Duplicates; d != 1 {
				t.Errorf("receiver Duplicates = %d, want 1", d)
			}
		})
	}
}

// TestRequestDeadline: a request to a peer whose handler does not return
// ends with ctx (its deadline, or its cancellation) or with the sender's
// timeout, whichever comes first, and the peer is served again once the
// handler returns.
func TestRequestDeadline(t *testing.T) {
	const short = 300 * time.Millisecond
	tests := []struct {
		name    string
		timeout time.Duration // the sender's
		ctx     func() (context.Context, context.CancelFunc)
		cancel  bool // cancel ctx once the handler runs
		want    error
		took    time.Duration // how long the request should take
	}{
		{"ctx deadline before the timeout", time.Minute,
			func() (context.Context, context.CancelFunc) { return context.WithTimeout(context.Background(), short) },
			false, context.DeadlineExceeded, short},
		{"timeout before the ctx deadline", short,
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), time.Minute)
			},
			false, sender.ErrTimeout, short},
		{"ctx cancelled", time.Minute,
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			true, context.Canceled, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			defer unblock()
			n := startReceiver(t, "stuck", func(ctx context.Context, m receiver.Message) ([]byte, error) {
				if string(m.Payload) == "block" {
					select {
					case entered <- struct{}{}:
					default:
					}
					select {
					case <-release:
					case <-ctx.Done():
					}
				}
				return []byte("done"), nil
			})
			s := newSender(t, func(c *sender.Config) { c.Timeout = tc.timeout })
			ctx, cancel := tc.ctx()
			defer cancel()
			if tc.cancel {
				go func() { <-entered; cancel() }()
			}
			start := time.Now()
			reply, err := s.Request(ctx, n.addr, typeData, []byte("block"))
			took := time.Since(start)
			if e := peerErrs(t, err)[n.addr]; !errors.Is(e, tc.want) {
				t.Fatalf("Request = %q, %v; want %v", reply, err, tc.want)
			}
			if took < tc.took*3/4 || took > tc.took+margin {
				t.Errorf("Request returned after %v, want about %v", took, tc.took)
			}
			unblock()
			reply, err = s.Request(context.Background(), n.addr, typeData, []byte("next"))
			if err != nil || string(reply) != "done" {
				t.Errorf("request after the handler returned: %q, %v", reply, err)
			}
		})
	}
}

func TestModeNames(t *testing.T) {
	for _, m := range []sender.Mode{sender.Async, sender.Ack, sender.Sync} {
		got, err := sender.ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if s := sender.Mode(3).String(); s != "Mode(3)" {
		t.Errorf("Mode(3).String() = %q", s)
	}
	for _, s := range []string{"", "Async", "SYNC", "Mode(3)", "acks"} {
		_, err := sender.ParseMode(s)
		if err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		} else if !strings.Contains(err.Error(), "async, ack, sync") {
			t.Errorf("ParseMode(%q): %v; want the allowed names listed", s, err)
		}
	}
}
