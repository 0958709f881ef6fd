package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// testID is a member id with every byte set, so a copy that drops or shifts
// a byte shows.
func testID(seed byte) ID {
	var id ID
	for i := range id {
		id[i] = seed + byte(i)*17 + 1
	}
	return id
}

// pattern is n bytes that are not all alike, so a misplaced slice shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + 3)
	}
	return b
}

// readOne reads frame through a Reader and checks that it is the only frame
// in it: the header announces the body length that follows and a second
// Next finds a clean end of stream.
func readOne(t *testing.T, frame []byte, want Type) Frame {
	t.Helper()
	if len(frame) < HeaderLen {
		t.Fatalf("frame of %d bytes, shorter than a header", len(frame))
	}
	typ, flags, n, err := ParseHeader(frame[:HeaderLen], DefaultMaxFrame)
	if err != nil {
		t.Fatalf("ParseHeader: %v", err)
	}
	if typ != want || flags != 0 || n != len(frame)-HeaderLen {
		t.Fatalf("ParseHeader = type %v flags %#x length %d, want %v 0 %d", typ, flags, n, want, len(frame)-HeaderLen)
	}
	r := NewReader(bytes.NewReader(frame), DefaultMaxFrame)
	f, err := r.Next(nil)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if f.Type != want || f.Flags != 0 || !bytes.Equal(f.Body, frame[HeaderLen:]) {
		t.Fatalf("Next = type %v flags %#x body of %d bytes, want %v 0 %d bytes equal to the frame's", f.Type, f.Flags, len(f.Body), want, len(frame)-HeaderLen)
	}
	if _, err := r.Next(nil); err != io.EOF {
		t.Fatalf("Next after the only frame: %v, want io.EOF", err)
	}
	return f
}

// Encoded sizes, computed from the msgpack spec rather than from the code
// under test, so a non-minimal or wrong width shows as a length mismatch.
func uintLen(v uint64) int {
	switch {
	case v < 128:
		return 1
	case v < 1<<8:
		return 2
	case v < 1<<16:
		return 3
	case v < 1<<32:
		return 5
	}
	return 9
}

func binLen(n int) int {
	switch {
	case n < 1<<8:
		return 2 + n
	case n < 1<<16:
		return 3 + n
	}
	return 5 + n
}

func strLen(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n < 1<<8:
		return 2 + n
	case n < 1<<16:
		return 3 + n
	}
	return 5 + n
}

func TestMessageRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 255, 256, 65535, 65536, 1 << 20}
	seqs := []uint64{0, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
	modes := []Mode{Async, Ack, Sync}
	payloads := make(map[int][]byte)
	for _, n := range sizes {
		payloads[n] = pattern(n)
	}
	for _, size := range sizes {
		for _, seq := range seqs {
			for _, mode := range modes {
				e := Envelope{From: testID(byte(size)), Seq: seq, Mode: mode, Payload: payloads[size]}
				typ := FirstApp + Type(seq%240)
				frame := AppendMessage(nil, typ, e)
				if want := HeaderLen + 1 + binLen(16) + uintLen(seq) + 1 + binLen(size); len(frame) != want {
					t.Fatalf("payload %d seq %d mode %v: frame of %d bytes, want %d", size, seq, mode, len(frame), want)
				}
				f := readOne(t, frame, typ)
				got, err := ParseEnvelope(f.Body)
				if err != nil {
					t.Fatalf("payload %d seq %d mode %v: ParseEnvelope: %v", size, seq, mode, err)
				}
				if got.From != e.From || got.Seq != e.Seq || got.Mode != e.Mode || !bytes.Equal(got.Payload, e.Payload) {
					t.Fatalf("payload %d seq %d mode %v: parsed from %x seq %d mode %v payload of %d bytes",
						size, seq, mode, got.From, got.Seq, got.Mode, len(got.Payload))
				}
				if got.Payload == nil {
					t.Fatalf("payload %d: parsed payload is nil, want an empty slice of the body", size)
				}
			}
		}
	}
}

func TestParseEnvelopePayloadAliasesBody(t *testing.T) {
	frame := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 9, Payload: []byte("abc")})
	body := frame[HeaderLen:]
	e, err := ParseEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	body[len(body)-1] = 'z'
	if string(e.Payload) != "abz" {
		t.Fatalf("payload %q does not alias the body (documented)", e.Payload)
	}
	// From is a copy: changing the body afterwards must not change it.
	body[3] ^= 0xff
	if e.From != testID(1) {
		t.Fatal("From aliases the body")
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte("prefix-bytes")
	b := append([]byte(nil), prefix...)
	b = AppendPing(b, TypePing, 7)
	b = AppendAck(b, AckBody{Seq: 8, Status: Applied})
	if !bytes.HasPrefix(b, prefix) {
		t.Fatalf("prefix overwritten: %q", b[:len(prefix)])
	}
	r := NewReader(bytes.NewReader(b[len(prefix):]), DefaultMaxFrame)
	f, err := r.Next(nil)
	if err != nil || f.Type != TypePing {
		t.Fatalf("first frame: %v %v", f.Type, err)
	}
	if n, err := ParsePing(f.Body); err != nil || n != 7 {
		t.Fatalf("ParsePing = %d, %v", n, err)
	}
	f, err = r.Next(nil)
	if err != nil || f.Type != TypeAck {
		t.Fatalf("second frame: %v %v", f.Type, err)
	}
	if a, err := ParseAck(f.Body); err != nil || !sameAck(a, AckBody{Seq: 8, Status: Applied}) {
		t.Fatalf("ParseAck = %+v, %v", a, err)
	}
}

// sameAck compares acks; AckBody holds a slice, so == does not.
func sameAck(a, b AckBody) bool {
	return a.Seq == b.Seq && a.Status == b.Status && a.Err == b.Err && bytes.Equal(a.Reply, b.Reply)
}

func TestAckRoundTrip(t *testing.T) {
	for _, status := range []AckStatus{Received, Applied, Failed} {
		for _, n := range []int{0, 31, 32, 255, 256, 300, 65535, 65536, 70000} {
			for _, seq := range []uint64{0, 1, 200, math.MaxUint64} {
				for _, r := range []int{0, 1, 255, 256, 65535, 65536, 1 << 20} {
					if n > 300 && r > 256 && seq != 1 {
						continue // the large cases once each is enough
					}
					a := AckBody{Seq: seq, Status: status, Err: strings.Repeat("é", n/2) + strings.Repeat("x", n%2)}
					if r > 0 {
						a.Reply = pattern(r)
					}
					if len(a.Err) != n {
						t.Fatalf("test error text of %d bytes, want %d", len(a.Err), n)
					}
					frame := AppendAck(nil, a)
					if want := HeaderLen + 1 + uintLen(seq) + 1 + strLen(n) + binLen(r); len(frame) != want {
						t.Fatalf("status %d err %d reply %d: frame of %d bytes, want %d", status, n, r, len(frame), want)
					}
					if got := AckLen(a); got != len(frame)-HeaderLen {
						t.Fatalf("status %d err %d reply %d: AckLen %d, body of %d bytes", status, n, r, got, len(frame)-HeaderLen)
					}
					f := readOne(t, frame, TypeAck)
					got, err := ParseAck(f.Body)
					if err != nil {
						t.Fatalf("status %d err %d seq %d reply %d: %v", status, n, seq, r, err)
					}
					if !sameAck(got, a) {
						t.Fatalf("status %d err %d seq %d reply %d: parsed seq %d status %d err of %d bytes reply of %d", status, n, seq, r, got.Seq, got.Status, len(got.Err), len(got.Reply))
					}
					if (got.Reply == nil) != (r == 0) {
						t.Fatalf("reply of %d bytes parsed as nil %v", r, got.Reply == nil)
					}
					if s, err := ParseAckSeq(f.Body[:min(len(f.Body), 10)]); err != nil || s != seq {
						t.Fatalf("ParseAckSeq of the first 10 bytes = %d, %v; want %d", s, err, seq)
					}
				}
			}
		}
	}
}

// TestAckReplyAliasesBody: a parsed reply is the frame's own memory (as a
// payload is), so the ack reader hands it on without a copy.
func TestAckReplyAliasesBody(t *testing.T) {
	frame := AppendAck(nil, AckBody{Seq: 1, Status: Applied, Reply: []byte("abc")})
	body := frame[HeaderLen:]
	a, err := ParseAck(body)
	if err != nil {
		t.Fatal(err)
	}
	body[len(body)-1] = 'z'
	if string(a.Reply) != "abz" {
		t.Fatalf("reply %q does not alias the body (documented)", a.Reply)
	}
}

func TestParseAckSeq(t *testing.T) {
	tests := []struct {
		name   string
		prefix []byte
		want   uint64
		ok     bool
	}{
		{"whole ack", AppendAck(nil, AckBody{Seq: 77, Status: Applied, Reply: pattern(100)})[HeaderLen:], 77, true},
		{"array and seq only", cat(mpArray(4), mpUint(1<<40)), 1 << 40, true},
		{"old three-element ack", cat(mpArray(3), mpUint(9)), 9, true},
		{"array32 header", cat([]byte{0xdd, 0, 0, 0, 4}, mpUint(5), mpUint(2)), 5, true},
		{"empty", nil, 0, false},
		{"array of 2", cat(mpArray(2), mpUint(1)), 0, false},
		{"seq cut short", cat(mpArray(4), []byte{0xcf, 0, 0}), 0, false},
		{"seq negative", cat(mpArray(4), []byte{0xff}), 0, false},
		{"seq a string", cat(mpArray(4), mpStr("1")), 0, false},
		{"array32 claims more than the prefix", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 1}, 1, true},
		{"array16 of 2", cat([]byte{0xdc, 0, 2}, mpUint(1)), 0, false},
		{"array header cut", []byte{0xdd, 0, 0}, 0, false},
		{"not an array", mpUint(1), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAckSeq(tc.prefix)
			if !tc.ok {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseAckSeq = %d, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseAckSeq = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func testPeers() map[string]Peer {
	now := time.Now()
	return map[string]Peer{
		"ipv4": {ID: testID(1), Name: "node1", Domain: "default",
			Addr: netip.MustParseAddrPort("198.51.100.10:4000"), Started: now},
		"ipv6": {ID: testID(2), Name: "node2", Domain: "",
			Addr: netip.MustParseAddrPort("[2001:db8::1]:65535"), Started: now.Add(-time.Hour)},
		"ipv6 zone": {ID: testID(3), Name: "n", Domain: "d",
			Addr: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Started: time.Unix(0, 1)},
		"ipv4-mapped ipv6": {ID: testID(4), Name: "mapped", Domain: "x",
			Addr: netip.MustParseAddrPort("[::ffff:192.0.2.1]:7946"), Started: time.Unix(0, 0)},
		"utf-8 names": {ID: testID(5), Name: "nœud-été-東京-🦆", Domain: "домен",
			Addr: netip.MustParseAddrPort("192.0.2.1:0"), Started: time.Date(2026, 11, 22, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))},
		"before 1970": {ID: testID(6), Name: "apollo", Domain: "moon",
			Addr: netip.MustParseAddrPort("127.0.0.1:80"), Started: time.Date(1969, 7, 20, 20, 17, 40, 999999999, time.UTC)},
		"long names": {ID: testID(7), Name: strings.Repeat("n", 300), Domain: strings.Repeat("d", 70000),
			Addr: netip.MustParseAddrPort("10.0.0.1:1"), Started: time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)},
		"zone": {ID: testID(9), Name: "z", Domain: "d", Zone: "eu-west-1a",
			Addr: netip.MustParseAddrPort("10.0.0.1:1"), Started: time.Unix(5, 0)},
		"earliest": {ID: testID(8), Name: "old", Domain: "",
			Addr: netip.MustParseAddrPort("10.0.0.1:1"), Started: time.Unix(0, math.MinInt64)},
	}
}

func samePeer(t *testing.T, got, want Peer) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Domain != want.Domain || got.Addr != want.Addr || got.Zone != want.Zone {
		t.Errorf("peer = %x %q %q %v, want %x %q %q %v", got.ID, got.Name, got.Domain, got.Addr, want.ID, want.Name, want.Domain, want.Addr)
	}
	if !got.Started.Equal(want.Started) {
		t.Errorf("started = %v, want %v", got.Started, want.Started)
	}
	if got.Started.Location() != time.UTC {
		t.Errorf("started in %v, want UTC", got.Started.Location())
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for name, p := range testPeers() {
		t.Run(name, func(t *testing.T) {
			f := readOne(t, AppendHello(nil, p), TypeHello)
			got, err := ParseHello(f.Body)
			if err != nil {
				t.Fatal(err)
			}
			samePeer(t, got, p)
		})
	}
}

func TestPongRoundTrip(t *testing.T) {
	for name, p := range testPeers() {
		for _, nonce := range []uint64{0, 127, 128, math.MaxUint32 + 1, math.MaxUint64} {
			t.Run(name, func(t *testing.T) {
				f := readOne(t, AppendPong(nil, nonce, p), TypePong)
				gotNonce, got, err := ParsePong(f.Body)
				if err != nil {
					t.Fatal(err)
				}
				if gotNonce != nonce {
					t.Errorf("nonce = %d, want %d", gotNonce, nonce)
				}
				samePeer(t, got, p)
			})
		}
	}
}

func TestPingRoundTrip(t *testing.T) {
	for _, typ := range []Type{TypePing, TypeLeave} {
		for _, nonce := range []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64} {
			frame := AppendPing(nil, typ, nonce)
			if want := HeaderLen + 1 + uintLen(nonce); len(frame) != want {
				t.Fatalf("%v %d: frame of %d bytes, want %d", typ, nonce, len(frame), want)
			}
			f := readOne(t, frame, typ)
			got, err := ParsePing(f.Body)
			if err != nil || got != nonce {
				t.Fatalf("%v: ParsePing = %d, %v; want %d", typ, got, err, nonce)
			}
		}
	}
}

func TestHeaderLayout(t *testing.T) {
	frame := AppendPing(nil, TypeLeave, 5)
	want := []byte{'F', 'L', 'K', 'T', 1, 5, 0, 0, 0, 0, 0, 2, 0x91, 5}
	if !bytes.Equal(frame, want) {
		t.Fatalf("frame = % x, want % x", frame, want)
	}
}

func TestParseHeaderTypes(t *testing.T) {
	for typ := 0; typ < 256; typ++ {
		h := AppendPing(nil, Type(typ), 1)[:HeaderLen]
		got, _, n, err := ParseHeader(h, DefaultMaxFrame)
		valid := typ >= 1 && typ <= 6 || typ >= 16
		switch {
		case valid && (err != nil || got != Type(typ) || n != 2):
			t.Errorf("type %d: %v %d %v, want it accepted", typ, got, n, err)
		case !valid && !errors.Is(err, ErrMalformed):
			t.Errorf("type %d: err %v, want ErrMalformed", typ, err)
		}
	}
}

func TestParseHeaderLength(t *testing.T) {
	h := func(n uint32) []byte {
		b := AppendPing(nil, TypePing, 0)[:HeaderLen]
		binary.BigEndian.PutUint32(b[8:], n)
		return b
	}
	tests := []struct {
		n    uint32
		max  int
		want error
	}{
		{0, 0, nil},
		{1, 0, ErrTooLarge},
		{100, 100, nil},
		{101, 100, ErrTooLarge},
		{DefaultMaxFrame, DefaultMaxFrame, nil},
		{DefaultMaxFrame + 1, DefaultMaxFrame, ErrTooLarge},
		{math.MaxUint32, DefaultMaxFrame, ErrTooLarge},
		{math.MaxUint32, math.MaxInt, nil},
	}
	if uint64(math.MaxInt) < math.MaxUint32 {
		tests[len(tests)-1].want = ErrTooLarge // 32-bit: the length would not fit an int
	}
	for _, tc := range tests {
		_, _, n, err := ParseHeader(h(tc.n), tc.max)
		if !errors.Is(err, tc.want) || (tc.want == nil && n != int(tc.n)) {
			t.Errorf("length %d max %d: n %d err %v, want %v", tc.n, tc.max, n, err, tc.want)
		}
	}
}

func TestHeaderRejections(t *testing.T) {
	valid := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1, Payload: []byte("x")})
	edit := func(f func(b []byte)) []byte {
		b := bytes.Clone(valid)
		f(b)
		return b
	}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"magic", edit(func(b []byte) { b[0] = 'G' }), ErrMagic},
		{"magic last byte", edit(func(b []byte) { b[3] = 't' }), ErrMagic},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), ErrMagic},
		{"version 0", edit(func(b []byte) { b[4] = 0 }), ErrVersion},
		{"version 2", edit(func(b []byte) { b[4] = 2 }), ErrVersion},
		{"version 255", edit(func(b []byte) { b[4] = 255 }), ErrVersion},
		{"unknown flag", edit(func(b []byte) { b[6] = 2 }), ErrFlags},
		{"unknown flag", edit(func(b []byte) { b[6] = 0x80 }), ErrFlags},
		{"reserved byte", edit(func(b []byte) { b[7] = 1 }), ErrMalformed},
		{"type 0", edit(func(b []byte) { b[5] = 0 }), ErrMalformed},
		{"type 7", edit(func(b []byte) { b[5] = 7 }), ErrMalformed},
		{"type 15", edit(func(b []byte) { b[5] = 15 }), ErrMalformed},
		{"too large", edit(func(b []byte) { binary.BigEndian.PutUint32(b[8:], DefaultMaxFrame+1) }), ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := ParseHeader(tc.frame[:HeaderLen], DefaultMaxFrame)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseHeader: %v, want %v", err, tc.want)
			}
			_, err = NewReader(bytes.NewReader(tc.frame), DefaultMaxFrame).Next(nil)
			if !errors.Is(err, tc.want) {
				t.Errorf("Next: %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, _, err := ParseHeader(valid[:HeaderLen-1], DefaultMaxFrame); !errors.Is(err, ErrMalformed) {
		t.Errorf("short header: %v, want ErrMalformed", err)
	}
}

// countingReader serves a header and then an endless body, counting what is
// read from it.
type countingReader struct {
	head []byte
	read int
}

func (r *countingReader) Read(p []byte) (int, error) {
	n := 0
	if r.read < len(r.head) {
		n = copy(p, r.head[r.read:])
	} else {
		clear(p)
		n = len(p)
	}
	r.read += n
	return n, nil
}

func TestNextTooLargeReadsNoBody(t *testing.T) {
	const max = 1 << 20
	head := AppendPing(nil, TypePing, 0)[:HeaderLen]
	binary.BigEndian.PutUint32(head[8:], math.MaxUint32)

	// A source that hands over the header alone in its first read: Next must
	// not come back for the body.
	src := &countingReader{head: head}
	r := NewReader(iotest.OneByteReader(io.MultiReader(bytes.NewReader(head), iotest.ErrReader(errors.New("body read")))), max)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := r.Next(nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Next: %v, want ErrTooLarge", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > max {
		t.Errorf("Next allocated %d bytes for a refused frame", grew)
	}

	// A source that is always ready: at most one buffer fill is read.
	r = NewReader(src, max)
	if _, err := r.Next(nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Next: %v, want ErrTooLarge", err)
	}
	if src.read > 64<<10 {
		t.Errorf("Next read %d bytes of a refused frame, at most one 64 KiB buffer fill expected", src.read)
	}
}

// TestSkip: after Next refuses a frame as too large, Skip keeps a prefix of
// its body, discards the rest without holding it, and the stream goes on.
func TestSkip(t *testing.T) {
	const maxFrame = 1 << 10
	const seq = 1 << 33
	big := AppendAck(nil, AckBody{Seq: seq, Status: Applied, Reply: pattern(3 << 20)})
	mid := AppendAck(nil, AckBody{Seq: seq, Status: Applied, Reply: pattern(20000)})
	after := AppendAck(nil, AckBody{Seq: seq + 1, Status: Applied, Reply: []byte("next")})
	tests := []struct {
		name  string
		frame []byte
		cut   int // if > 0, the stream ends after this many bytes of frame
		keep  int
		wrap  func(io.Reader) io.Reader
	}{
		{"prefix of 32", big, 0, 32, nil},
		{"nothing kept", big, 0, 0, nil},
		{"negative keep", big, 0, -1, nil},
		{"keep more than the body", mid, 0, 1 << 20, nil},
		{"one byte reads", mid, 0, 32, iotest.OneByteReader},
		{"half reads", big, 0, 32, iotest.HalfReader},
		{"truncated in the prefix", big, HeaderLen + 10, 32, nil},
		{"truncated after the prefix", big, HeaderLen + 1<<20, 32, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			input := slices.Concat(tc.frame, after)
			if tc.cut > 0 {
				input = tc.frame[:tc.cut]
			}
			var src io.Reader = bytes.NewReader(input)
			if tc.wrap != nil {
				src = tc.wrap(src)
			}
			r := NewReader(src, maxFrame)
			if _, err := r.Next(nil); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Next: %v, want ErrTooLarge", err)
			}
			var before, afterMem runtime.MemStats
			runtime.ReadMemStats(&before)
			f, n, err := r.Skip(tc.keep)
			runtime.ReadMemStats(&afterMem)
			if tc.cut > 0 {
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("Skip: %v, want io.ErrUnexpectedEOF", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Skip: %v", err)
			}
			if grew := afterMem.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Errorf("Skip allocated %d bytes for a body of %d", grew, n)
			}
			body := tc.frame[HeaderLen:]
			if n != int64(len(body)) || f.Type != TypeAck || !bytes.Equal(f.Body, body[:min(max(tc.keep, 0), len(body))]) {
				t.Fatalf("Skip = type %v, %d bytes kept, length %d; want ack, %d kept, length %d", f.Type, len(f.Body), n, tc.keep, len(body))
			}
			if tc.keep >= 16 {
				if got, err := ParseAckSeq(f.Body); err != nil || got != seq {
					t.Fatalf("ParseAckSeq of the prefix = %d, %v", got, err)
				}
			}
			g, err := r.Next(nil)
			if err != nil {
				t.Fatalf("Next after Skip: %v", err)
			}
			if a, err := ParseAck(g.Body); err != nil || a.Seq != seq+1 || string(a.Reply) != "next" {
				t.Fatalf("frame after the skipped one: %+v %v", a, err)
			}
		})
	}
}

// TestSkipOnlyAfterRefusal: Skip steps over nothing but a body Next refused
// for its size; any other frame or error leaves nothing to skip.
func TestSkipOnlyAfterRefusal(t *testing.T) {
	tooLarge := AppendAck(nil, AckBody{Seq: 1, Reply: pattern(2000)})
	tests := []struct {
		name  string
		input []byte
		next  int // Next calls before Skip
	}{
		{"fresh reader", AppendPing(nil, TypePing, 1), 0},
		{"after a good frame", AppendPing(nil, TypePing, 1), 1},
		{"after a bad magic", []byte("GET / HTTP/1.1\r\n\r\n"), 1},
		{"twice", tooLarge, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tc.input), 1<<10)
			for range max(tc.next, 0) {
				r.Next(nil)
			}
			if tc.next < 0 {
				if _, err := r.Next(nil); !errors.Is(err, ErrTooLarge) {
					t.Fatalf("Next: %v", err)
				}
				if _, _, err := r.Skip(8); err != nil {
					t.Fatalf("first Skip: %v", err)
				}
			}
			if _, _, err := r.Skip(8); err == nil {
				t.Fatal("Skip succeeded with nothing to skip")
			}
		})
	}
}

func TestNextTruncated(t *testing.T) {
	small := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1, Payload: pattern(1000)})
	big := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1, Payload: pattern(3 << 20)})
	tests := []struct {
		name  string
		input []byte
	}{
		{"one header byte", small[:1]},
		{"header less one", small[:HeaderLen-1]},
		{"header only", small[:HeaderLen]},
		{"body less one", small[:len(small)-1]},
		{"large, header only", big[:HeaderLen]},
		{"large, first chunk", big[:HeaderLen+1<<20]},
		{"large, within second chunk", big[:HeaderLen+1<<20+5]},
		{"large, body less one", big[:len(big)-1]},
		{"second frame truncated", append(bytes.Clone(small), small[:20]...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, wrap := range []struct {
				name string
				r    func(io.Reader) io.Reader
			}{
				{"plain", func(r io.Reader) io.Reader { return r }},
				{"half", iotest.HalfReader},
				{"data+EOF", iotest.DataErrReader},
			} {
				r := NewReader(wrap.r(bytes.NewReader(tc.input)), DefaultMaxFrame)
				var err error
				for range 3 {
					if _, err = r.Next(nil); err != nil {
						break
					}
				}
				if err != io.ErrUnexpectedEOF {
					t.Errorf("%s: Next: %v, want io.ErrUnexpectedEOF", wrap.name, err)
				}
			}
		})
	}
}

func TestNextEOF(t *testing.T) {
	if _, err := NewReader(bytes.NewReader(nil), DefaultMaxFrame).Next(nil); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	frame := AppendPing(nil, TypePing, 1)
	r := NewReader(iotest.DataErrReader(bytes.NewReader(frame)), DefaultMaxFrame)
	if _, err := r.Next(nil); err != nil {
		t.Fatalf("frame delivered with io.EOF: %v", err)
	}
	for range 2 {
		if _, err := r.Next(nil); err != io.EOF {
			t.Fatalf("after the frame: %v, want io.EOF", err)
		}
	}
}

func TestNextPassesReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	frame := AppendPing(nil, TypePing, 1)
	for cut := 0; cut < len(frame); cut++ {
		r := NewReader(io.MultiReader(bytes.NewReader(frame[:cut]), iotest.ErrReader(boom)), DefaultMaxFrame)
		if _, err := r.Next(nil); !errors.Is(err, boom) {
			t.Errorf("error after %d bytes: %v, want %v", cut, err, boom)
		}
	}
	r := NewReader(iotest.TimeoutReader(bytes.NewReader(frame)), DefaultMaxFrame)
	if _, err := r.Next(nil); err != nil {
		t.Fatalf("first read: %v", err)
	}
}

// watchedReader hands out its data in the pieces it is given, one per Read,
// and records how many times started had been called at each Read.
type watchedReader struct {
	pieces  [][]byte
	started *int
	atRead  []int
}

func (r *watchedReader) Read(p []byte) (int, error) {
	r.atRead = append(r.atRead, *r.started)
	if len(r.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.pieces[0])
	if r.pieces[0] = r.pieces[0][n:]; len(r.pieces[0]) == 0 {
		r.pieces = r.pieces[1:]
	}
	return n, nil
}

func TestNextStarted(t *testing.T) {
	f1 := AppendPing(nil, TypePing, 1)
	f2 := AppendPing(nil, TypePing, 2)
	f3 := AppendAck(nil, AckBody{Seq: 3, Status: Received})
	calls := 0
	src := &watchedReader{
		// f1 in two reads; f2 and f3 in one read.
		pieces:  [][]byte{f1[:3], f1[3:], append(bytes.Clone(f2), f3...)},
		started: &calls,
	}
	r := NewReader(src, DefaultMaxFrame)
	for i, want := range []uint64{1, 2, 3} {
		f, err := r.Next(func() { calls++ })
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if calls != i+1 {
			t.Fatalf("after frame %d started was called %d times, want %d", i, calls, i+1)
		}
		var got uint64
		if f.Type == TypeAck {
			a, _ := ParseAck(f.Body)
			got = a.Seq
		} else {
			got, _ = ParsePing(f.Body)
		}
		if got != want {
			t.Fatalf("frame %d carries %d, want %d", i, got, want)
		}
	}
	// The first read of each frame that was not yet buffered happened before
	// started was called for it.
	if src.atRead[0] != 0 || src.atRead[2] != 1 {
		t.Errorf("started counts seen by the reads: %v; want 0 at the first read and 1 at the third", src.atRead)
	}
	if _, err := r.Next(func() { calls++ }); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	if calls != 3 {
		t.Errorf("started called at a clean end of stream: %d calls", calls)
	}
}

func TestNextStartedWaitsForFirstByte(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	started := make(chan struct{}, 2)
	done := make(chan error, 1)
	r := NewReader(pr, DefaultMaxFrame)
	go func() {
		_, err := r.Next(func() { started <- struct{}{} })
		done <- err
	}()
	frame := AppendPing(nil, TypePing, 1)
	// The goroutine is blocked in Read until this write; started must not
	// have fired before it. The write returns only once Read has taken the
	// byte, and started cannot have been sent before that.
	select {
	case <-started:
		t.Fatal("started called before any byte arrived")
	default:
	}
	if _, err := pw.Write(frame[:1]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("started not called after the first byte")
	}
	select {
	case err := <-done:
		t.Fatalf("Next returned after one byte: %v", err)
	default:
	}
	if _, err := pw.Write(frame[1:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(started) != 0 {
		t.Error("started called more than once for one frame")
	}
}

func TestBuffered(t *testing.T) {
	f1 := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1, Payload: pattern(100)})
	f2 := AppendPing(nil, TypePing, 2)
	r := NewReader(bytes.NewReader(append(bytes.Clone(f1), f2...)), DefaultMaxFrame)
	if n := r.Buffered(); n != 0 {
		t.Fatalf("Buffered before any read = %d", n)
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(); n != len(f2) {
		t.Fatalf("Buffered with a second frame waiting = %d, want %d", n, len(f2))
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(); n != 0 {
		t.Fatalf("Buffered after the last frame = %d, want 0", n)
	}
}

func TestLargeFrames(t *testing.T) {
	tests := []struct {
		name string
		size int
		wrap func(io.Reader) io.Reader
	}{
		{"1 MiB less header", 1<<20 - 40, nil},
		{"1 MiB body exactly", 0, nil}, // size fixed below
		{"5 MiB", 5 << 20, nil},
		{"5 MiB + 1, half reads", 5<<20 + 1, iotest.HalfReader},
		{"3 MiB, one byte reads", 3 << 20, iotest.OneByteReader},
	}
	// A payload for which the body is exactly the 1 MiB step.
	tests[1].size = 1<<20 - (1 + binLen(16) + 1 + 1 + 5)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := Envelope{From: testID(9), Seq: 77, Mode: Sync, Payload: pattern(tc.size)}
			frame := AppendMessage(nil, FirstApp, e)
			frame = AppendPing(frame, TypePing, 5) // a frame after it
			var src io.Reader = bytes.NewReader(frame)
			if tc.wrap != nil {
				src = tc.wrap(src)
			}
			r := NewReader(src, DefaultMaxFrame)
			f, err := r.Next(nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseEnvelope(f.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got.From != e.From || got.Seq != e.Seq || got.Mode != e.Mode || !bytes.Equal(got.Payload, e.Payload) {
				t.Fatalf("envelope of %d bytes came back different", tc.size)
			}
			f, err = r.Next(nil)
			if err != nil || f.Type != TypePing {
				t.Fatalf("frame after the large one: %v %v", f.Type, err)
			}
			if n, err := ParsePing(f.Body); err != nil || n != 5 {
				t.Fatalf("frame after the large one: %d %v", n, err)
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	for _, n := range []int{0, 1, 1<<20 - 1, 1 << 20, 1<<20 + 1, 2 << 20, 2<<20 + 3} {
		src := pattern(n + 10)
		b, err := readBody(bytes.NewReader(src), n)
		if err != nil || !bytes.Equal(b, src[:n]) {
			t.Errorf("readBody(%d): %d bytes, %v", n, len(b), err)
		}
		if cap(b) > n+n/2+1<<20 {
			t.Errorf("readBody(%d): capacity %d", n, cap(b))
		}
	}
}

func TestTypeAndModeNames(t *testing.T) {
	for typ, want := range map[Type]string{TypeHello: "hello", TypeAck: "ack", TypePing: "ping", TypePong: "pong", TypeLeave: "leave", 0: "type-0", FirstApp: "type-16", 255: "type-255"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
	for m, want := range map[Mode]string{Async: "async", Ack: "ack", Sync: "sync", 3: "Mode(3)"} {
		if got := m.String(); got != want {
			t.Errorf("Mode(%d).String() = %q, want %q", uint8(m), got, want)
		}
	}
}

// FrameBuffered says whether the next frame is whole in the buffer, from
// its header alone, at every cut of a stream of two frames.
func TestFrameBuffered(t *testing.T) {
	one := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1, Payload: []byte("abc")})
	two := AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 2, Payload: bytes.Repeat([]byte("x"), 100)})
	stream := append(append([]byte(nil), one...), two...)
	tests := []struct {
		name string
		have int // bytes of the stream that have arrived
		want bool
	}{
		{"nothing", 0, false},
		{"part of a header", HeaderLen - 1, false},
		{"a header", HeaderLen, false},
		{"all but a byte", len(one) - 1, false},
		{"the first frame", len(one), true},
		{"and part of the next", len(one) + 3, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() {
				pw.Write(stream[:tc.have])
				pw.Close()
			}()
			rd := NewReader(pr, DefaultMaxFrame)
			if tc.have > 0 {
				rd.r.Peek(tc.have) // fill the buffer with what has arrived
			}
			if got := rd.FrameBuffered(); got != tc.want {
				t.Errorf("with %d bytes: %v, want %v", tc.have, got, tc.want)
			}
		})
	}
}
