package receiver

import (
	"bytes"
	"testing"
)

// TestReplyCacheBounded: whatever a sender's replies look like, the cache
// holds at most keepReplies of them and at most its byte bound, keeps the
// newest, and knows which older messages had a reply it dropped.
func TestReplyCacheBounded(t *testing.T) {
	const maxBytes = 10 << 10
	tests := []struct {
		name string
		n    int
		size func(seq uint64) int // 0: the message had no reply
	}{
		{"small replies", 1000, func(uint64) int { return 10 }},
		{"replies near the byte bound", 100, func(uint64) int { return maxBytes/2 + 1 }},
		{"one reply over the byte bound", 3, func(seq uint64) int { return maxBytes + int(seq) }},
		{"mixed, some without a reply", 2000, func(seq uint64) int {
			if seq%3 == 0 {
				return 0
			}
			return int(seq*37) % (maxBytes / 3)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c replyCache
			buf := make([]byte, 0, 2*maxBytes)
			for seq := uint64(1); seq <= uint64(tc.n); seq++ {
				// One buffer for every reply, as a handler that reuses its
				// memory would: the cache must have copied.
				reply := buf[:tc.size(seq)]
				for i := range reply {
					reply[i] = byte(seq)
				}
				c.add(seq, reply, maxBytes)

				total := 0
				for _, k := range c.kept {
					total += len(k.reply)
				}
				if len(c.kept) > keepReplies || c.bytes > maxBytes || c.bytes != total || len(c.lost) > keepLost {
					t.Fatalf("after seq %d: %d replies, %d bytes (counted %d), %d lost; bounds %d replies, %d bytes, %d lost",
						seq, len(c.kept), total, c.bytes, len(c.lost), keepReplies, maxBytes, keepLost)
				}
			}
			// Every message is accounted for: its reply as it was, none,
			// or known to be gone.
			kept := 0
			for seq := uint64(1); seq <= uint64(tc.n); seq++ {
				reply, lost := c.lookup(seq)
				size := tc.size(seq)
				switch {
				case reply != nil:
					kept++
					if !bytes.Equal(reply, bytes.Repeat([]byte{byte(seq)}, size)) {
						t.Fatalf("seq %d: reply of %d bytes is not the one the handler returned", seq, len(reply))
					}
				case lost:
					if size == 0 && seq > c.unknown {
						t.Errorf("seq %d had no reply but is reported lost", seq)
					}
				case size > 0:
					t.Errorf("seq %d had a reply of %d bytes; it is neither kept nor known to be lost", seq, size)
				}
			}
			if last := uint64(tc.n); tc.size(last) > 0 && tc.size(last) <= maxBytes {
				if r, _ := c.lookup(last); r == nil {
					t.Error("the newest reply is not kept")
				}
			}
			t.Logf("%d kept (%d bytes), %d known lost, unknown up to %d", kept, c.bytes, len(c.lost), c.unknown)
		})
	}
}
