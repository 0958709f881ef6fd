package receiver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/receiver"
)

// TestReplyByMode: a sync message's reply travels back in its Applied ack;
// the acks of async and ack messages carry none, whatever the handler said.
func TestReplyByMode(t *testing.T) {
	leakcheck.Check(t)
	p := peerInfo("asker", netip.MustParseAddrPort("127.0.0.1:2"))
	_, addr := startReceiver(t, func(_ context.Context, m receiver.Message) ([]byte, error) {
		if m.From.ID != p.ID || m.From.Name != p.Name || m.From.Addr != p.Addr || m.Type != typeData {
			return nil, fmt.Errorf("message from %v of type %d", m.From, m.Type)
		}
		switch string(m.Payload) {
		case "empty":
			return []byte{}, nil
		case "fail":
			return []byte("a reply with an error is dropped"), errors.New("no")
		}
		return append([]byte("re: "), m.Payload...), nil
	})
	c := dial(t, addr)
	c.write(helloFrame(p))
	tests := []struct {
		mode    wire.Mode
		payload string
		want    []wire.AckBody
	}{
		{wire.Sync, "question", []wire.AckBody{{Seq: 1, Status: wire.Applied, Reply: []byte("re: question")}}},
		{wire.Sync, "empty", []wire.AckBody{{Seq: 2, Status: wire.Applied}}},
		{wire.Sync, "fail", []wire.AckBody{{Seq: 3, Status: wire.Failed, Err: "no"}}},
		{wire.Ack, "question", []wire.AckBody{{Seq: 4, Status: wire.Received}, {Seq: 4, Status: wire.Applied}}},
		{wire.Async, "question", []wire.AckBody{{Seq: 5, Status: wire.Received}}},
		{wire.Sync, strings.Repeat("x", 70000), []wire.AckBody{{Seq: 6, Status: wire.Applied, Reply: []byte("re: " + strings.Repeat("x", 70000))}}},
	}
	for i, tc := range tests {
		c.write(msgFrame(p.ID, uint64(i+1), tc.mode, tc.payload))
		for _, want := range tc.want {
			if a := c.ack(); !sameAck(a, want) {
				t.Errorf("%v %.20q: ack seq %d status %d err %q reply %.20q, want %+v", tc.mode, tc.payload, a.Seq, a.Status, a.Err, a.Reply, want)
			}
		}
	}
	c.stillOpen(100 * time.Millisecond)
}

// TestDuplicateReplies: a re-sent copy of a sync message is answered as the
// original was, from the replies the receiver keeps per sender (the last 16,
// at most twice MaxFrame in all); a copy whose reply is gone fails rather
// than pass an empty reply for the answer, and a copy of a message that had
// no reply still succeeds.
func TestDuplicateReplies(t *testing.T) {
	leakcheck.Check(t)
	const maxFrame = 4096
	var mu sync.Mutex
	applied := map[string]int{}
	_, addr := startReceiver(t, func(_ context.Context, m receiver.Message) ([]byte, error) {
		p := string(m.Payload)
		mu.Lock()
		applied[p]++
		mu.Unlock()
		switch {
		case p == "no reply":
			return nil, nil
		case p == "fail":
			return nil, errors.New("refused on purpose")
		case strings.HasPrefix(p, "big"):
			return bytes.Repeat([]byte(p[:4]), 750), nil // 3000 bytes
		case p == "too big":
			return make([]byte, maxFrame), nil
		}
		return []byte("reply to " + p), nil
	}, func(c *receiver.Config) { c.MaxFrame = maxFrame })
	p := peerInfo("resender", netip.MustParseAddrPort("127.0.0.1:2"))

	payload := func(seq uint64) string {
		switch {
		case seq == 3:
			return "no reply"
		case seq == 5:
			return "fail"
		case seq >= 21 && seq <= 23:
			return fmt.Sprint("big", seq-20) // big1, big2, big3
		case seq == 24:
			return "too big"
		}
		return fmt.Sprint("message ", seq)
	}
	replied := func(seq uint64) wire.AckBody {
		a := wire.AckBody{Seq: seq, Status: wire.Applied}
		if p := payload(seq); strings.HasPrefix(p, "big") {
			a.Reply = bytes.Repeat([]byte(p[:4]), 750)
		} else {
			a.Reply = []byte("reply to " + p)
		}
		return a
	}
	noReply := wire.AckBody{Seq: 3, Status: wire.Applied}
	failed := wire.AckBody{Seq: 5, Status: wire.Failed, Err: "refused on purpose"}
	gone := func(seq uint64) wire.AckBody {
		return wire.AckBody{Seq: seq, Status: wire.Failed, Err: "reply no longer available"}
	}
	tooBig := wire.AckBody{Seq: 24, Status: wire.Failed, Err: "does not fit in a frame of at most 4096 bytes"}
	// sameAnswer is sameAck, with Err of a failure matched as a substring.
	sameAnswer := func(got, want wire.AckBody) bool {
		if want.Status == wire.Failed && strings.Contains(got.Err, want.Err) {
			got.Err = want.Err
		}
		return sameAck(got, want)
	}
	seqs := func(from, to uint64) []uint64 {
		var s []uint64
		for seq := from; seq <= to; seq++ {
			s = append(s, seq)
		}
		return s
	}
	type step struct {
		name string
		seqs []uint64
		want func(seq uint64) wire.AckBody
	}
	steps := []step{
		// 18 replies (3 had none, 5 failed): the first two are dropped.
		{"first run", seqs(1, 20), func(seq uint64) wire.AckBody {
			switch seq {
			case 3:
				return noReply
			case 5:
				return failed
			}
			return replied(seq)
		}},
		{"copies of the first run", seqs(1, 20), func(seq uint64) wire.AckBody {
			switch seq {
			case 1, 2:
				return gone(seq)
			case 3:
				return noReply
			case 5:
				return failed
			}
			return replied(seq)
		}},
		// Three replies of 3000 bytes: twice MaxFrame holds two of them.
		{"large replies", seqs(21, 24), func(seq uint64) wire.AckBody {
			if seq == 24 {
				return tooBig
			}
			return replied(seq)
		}},
		{"copies after the large replies", seqs(1, 24), func(seq uint64) wire.AckBody {
			switch {
			case seq == 3:
				return noReply
			case seq == 5:
				return failed
			case seq == 24:
				return tooBig
			case seq >= 22:
				return replied(seq)
			}
			return gone(seq)
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			// Each step on a connection of its own, as after a reconnect.
			c := dial(t, addr)
			c.write(helloFrame(p))
			for _, seq := range st.seqs {
				c.write(msgFrame(p.ID, seq, wire.Sync, payload(seq)))
				want := st.want(seq)
				if a := c.ack(); !sameAnswer(a, want) {
					t.Errorf("seq %d: ack status %d err %q reply of %d bytes %.12q; want status %d err %q reply of %d bytes",
						seq, a.Status, a.Err, len(a.Reply), a.Reply, want.Status, want.Err, len(want.Reply))
				}
			}
			c.c.Close()
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for seq := uint64(1); seq <= 24; seq++ {
		if n := applied[payload(seq)]; n != 1 {
			t.Errorf("seq %d (%q) applied %d times, want once", seq, payload(seq), n)
		}
	}
}
