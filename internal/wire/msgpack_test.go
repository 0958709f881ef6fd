package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Raw msgpack pieces for hand-built bodies. They are written from the spec,
// not with the encoder under test, so a shared mistake cannot hide.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func mpArray(n int) []byte {
	switch {
	case n < 16:
		return []byte{0x90 | byte(n)}
	case n < 1<<16:
		return binary.BigEndian.AppendUint16([]byte{0xdc}, uint16(n))
	}
	return binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
}

func mpUint(v uint64) []byte {
	switch {
	case v < 128:
		return []byte{byte(v)}
	case v < 1<<8:
		return []byte{0xcc, byte(v)}
	case v < 1<<16:
		return binary.BigEndian.AppendUint16([]byte{0xcd}, uint16(v))
	case v < 1<<32:
		return binary.BigEndian.AppendUint32([]byte{0xce}, uint32(v))
	}
	return binary.BigEndian.AppendUint64([]byte{0xcf}, v)
}

func mpBin(p []byte) []byte {
	switch n := len(p); {
	case n < 1<<8:
		return append([]byte{0xc4, byte(n)}, p...)
	case n < 1<<16:
		return append(binary.BigEndian.AppendUint16([]byte{0xc5}, uint16(n)), p...)
	default:
		return append(binary.BigEndian.AppendUint32([]byte{0xc6}, uint32(n)), p...)
	}
}

func mpStr(s string) []byte {
	switch n := len(s); {
	case n < 32:
		return append([]byte{0xa0 | byte(n)}, s...)
	case n < 1<<8:
		return append([]byte{0xd9, byte(n)}, s...)
	case n < 1<<16:
		return append(binary.BigEndian.AppendUint16([]byte{0xda}, uint16(n)), s...)
	default:
		return append(binary.BigEndian.AppendUint32([]byte{0xdb}, uint32(n)), s...)
	}
}

func mpInt64(v int64) []byte { return binary.BigEndian.AppendUint64([]byte{0xd3}, uint64(v)) }

func nested(depth int) []byte {
	b := bytes.Repeat([]byte{0x91}, depth-1)
	return append(b, 0x90)
}

var (
	rawID  = testID(3)
	peerID = rawID[:]
)

// Bodies with a hole for one field, so each table row says only what it
// changes.
func envBody(n int, from, seq, mode, payload []byte, extra ...[]byte) []byte {
	return cat(mpArray(n), from, seq, mode, payload, cat(extra...))
}

func goodEnv(extra ...[]byte) []byte {
	return envBody(4+len(extra), mpBin(peerID), mpUint(42), mpUint(1), mpBin([]byte("payload")), extra...)
}

func ackBody(n int, seq, status, errText []byte, extra ...[]byte) []byte {
	return cat(mpArray(n), seq, status, errText, cat(extra...))
}

// goodAck is an ack with every field; goodAck3 one as peers wrote it before
// acks carried a reply.
func goodAck(extra ...[]byte) []byte {
	return ackBody(4+len(extra), mpUint(42), mpUint(3), mpStr("boom"), cat(mpBin([]byte("reply")), cat(extra...)))
}

func goodAck3(extra ...[]byte) []byte {
	return ackBody(3+len(extra), mpUint(42), mpUint(3), mpStr("boom"), extra...)
}

var (
	wantGoodAck  = AckBody{Seq: 42, Status: Failed, Err: "boom", Reply: []byte("reply")}
	wantGoodAck3 = AckBody{Seq: 42, Status: Failed, Err: "boom"}
)

func peerBody(n int, id, name, domain, addr, started []byte, extra ...[]byte) []byte {
	return cat(mpArray(n), id, name, domain, addr, started, cat(extra...))
}

func goodPeer(extra ...[]byte) []byte {
	return peerBody(5+len(extra), mpBin(peerID), mpStr("node1"), mpStr("default"), mpStr("192.0.2.1:4000"), mpInt64(-1), extra...)
}

func helloBody(peer []byte, extra ...[]byte) []byte {
	return cat(mpArray(1+len(extra)), peer, cat(extra...))
}

func pongBody(nonce, peer []byte, extra ...[]byte) []byte {
	return cat(mpArray(2+len(extra)), nonce, peer, cat(extra...))
}

func pingBody(nonce []byte, extra ...[]byte) []byte {
	return cat(mpArray(1+len(extra)), nonce, cat(extra...))
}

type parser struct {
	name  string
	parse func([]byte) error
}

var (
	parseEnv = parser{"envelope", func(b []byte) error { _, err := ParseEnvelope(b); return err }}
	parseAck = parser{"ack", func(b []byte) error { _, err := ParseAck(b); return err }}
	parseHel = parser{"hello", func(b []byte) error { _, err := ParseHello(b); return err }}
	parsePin = parser{"ping", func(b []byte) error { _, err := ParsePing(b); return err }}
	parsePon = parser{"pong", func(b []byte) error { _, _, err := ParsePong(b); return err }}
	parsers  = []parser{parseEnv, parseAck, parseHel, parsePin, parsePon}
)

func TestHandBuiltBodiesParse(t *testing.T) {
	// The hand-built bodies above are what the encoder writes, so the
	// rejection table below changes exactly one thing in a valid body.
	e, err := ParseEnvelope(goodEnv())
	if err != nil || e.From != rawID || e.Seq != 42 || e.Mode != Ack || string(e.Payload) != "payload" {
		t.Fatalf("ParseEnvelope(goodEnv) = %+v, %v", e, err)
	}
	if !bytes.Equal(AppendMessage(nil, FirstApp, e)[HeaderLen:], goodEnv()) {
		t.Error("AppendMessage writes a body unlike the hand-built one")
	}
	a, err := ParseAck(goodAck())
	if err != nil || !sameAck(a, wantGoodAck) {
		t.Fatalf("ParseAck(goodAck) = %+v, %v", a, err)
	}
	if !bytes.Equal(AppendAck(nil, a)[HeaderLen:], goodAck()) {
		t.Error("AppendAck writes a body unlike the hand-built one")
	}
	if a, err := ParseAck(goodAck3()); err != nil || !sameAck(a, wantGoodAck3) || a.Reply != nil {
		t.Fatalf("ParseAck(goodAck3) = %+v, %v", a, err)
	}
	p, err := ParseHello(helloBody(goodPeer()))
	want := Peer{ID: rawID, Name: "node1", Domain: "default", Addr: netip.MustParseAddrPort("192.0.2.1:4000"), Started: time.Unix(0, -1)}
	if err != nil {
		t.Fatal(err)
	}
	samePeer(t, p, want)
	nonce, p, err := ParsePong(pongBody(mpUint(9), goodPeer()))
	if err != nil || nonce != 9 {
		t.Fatalf("ParsePong = %d, %v", nonce, err)
	}
	samePeer(t, p, want)
	// The encoder writes -1 as a negative fixint, not as the int64 above.
	encoded := peerBody(5, mpBin(peerID), mpStr("node1"), mpStr("default"), mpStr("192.0.2.1:4000"), []byte{0xff})
	if !bytes.Equal(AppendPong(nil, 9, want)[HeaderLen:], pongBody(mpUint(9), encoded)) {
		t.Error("AppendPong writes a body unlike the hand-built one")
	}
}

func TestBodyRejections(t *testing.T) {
	id15 := mpBin(peerID[:15])
	id17 := mpBin(append(bytes.Clone(peerID), 0))
	tests := []struct {
		name string
		p    parser
		body []byte
	}{
		{"empty", parseEnv, nil},
		{"not an array", parseEnv, mpUint(4)},
		{"map instead of array", parseEnv, append([]byte{0x84}, goodEnv()[1:]...)},
		{"array of 3", parseEnv, envBody(3, mpBin(peerID), mpUint(1), mpUint(0), nil)},
		{"array of 0", parseEnv, mpArray(0)},
		{"array of 5 with 4 elements", parseEnv, envBody(5, mpBin(peerID), mpUint(1), mpUint(0), mpBin(nil))},
		{"id of 15 bytes", parseEnv, envBody(4, id15, mpUint(1), mpUint(0), mpBin(nil))},
		{"id of 17 bytes", parseEnv, envBody(4, id17, mpUint(1), mpUint(0), mpBin(nil))},
		{"id of 0 bytes", parseEnv, envBody(4, mpBin(nil), mpUint(1), mpUint(0), mpBin(nil))},
		{"id as a string", parseEnv, envBody(4, mpStr(string(peerID)), mpUint(1), mpUint(0), mpBin(nil))},
		{"payload as a string", parseEnv, envBody(4, mpBin(peerID), mpUint(1), mpUint(0), mpStr("payload"))},
		{"payload nil", parseEnv, envBody(4, mpBin(peerID), mpUint(1), mpUint(0), []byte{0xc0})},
		{"mode 3", parseEnv, envBody(4, mpBin(peerID), mpUint(1), mpUint(3), mpBin(nil))},
		{"mode 255", parseEnv, envBody(4, mpBin(peerID), mpUint(1), mpUint(255), mpBin(nil))},
		{"mode 2^64-1", parseEnv, envBody(4, mpBin(peerID), mpUint(1), mpUint(math.MaxUint64), mpBin(nil))},
		{"seq negative", parseEnv, envBody(4, mpBin(peerID), []byte{0xff}, mpUint(0), mpBin(nil))},
		{"seq negative int64", parseEnv, envBody(4, mpBin(peerID), mpInt64(-1), mpUint(0), mpBin(nil))},
		{"seq float", parseEnv, envBody(4, mpBin(peerID), []byte{0xcb, 0x40, 0x45, 0, 0, 0, 0, 0, 0}, mpUint(0), mpBin(nil))},
		{"seq string", parseEnv, envBody(4, mpBin(peerID), mpStr("1"), mpUint(0), mpBin(nil))},
		{"seq truncated", parseEnv, cat(mpArray(4), mpBin(peerID), []byte{0xcf, 0, 0})},
		{"payload longer than body", parseEnv, cat(mpArray(4), mpBin(peerID), mpUint(1), mpUint(0), []byte{0xc4, 10, 1, 2})},
		{"payload length 2^32-1", parseEnv, cat(mpArray(4), mpBin(peerID), mpUint(1), mpUint(0), []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 1})},
		{"trailing byte", parseEnv, append(goodEnv(), 0)},
		{"trailing valid value", parseEnv, append(goodEnv(), mpUint(1)...)},
		{"two envelopes", parseEnv, append(goodEnv(), goodEnv()...)},
		{"truncated extra element", parseEnv, goodEnv(mpStr("extra")[:3])},
		{"array claims 2^32-1", parseEnv, append([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, goodEnv()[1:]...)},
		{"array16 claims 65535", parseEnv, append([]byte{0xdc, 0xff, 0xff}, goodEnv()[1:]...)},
		{"trailing array claims 2^32-1", parseEnv, goodEnv([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 1})},
		{"trailing map claims 2^32-1", parseEnv, goodEnv([]byte{0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2})},
		{"trailing map claims 2^31", parseEnv, goodEnv([]byte{0xdf, 0x80, 0, 0, 0})},
		{"trailing array claims 2^31", parseEnv, goodEnv([]byte{0xdd, 0x80, 0, 0, 0})},
		{"trailing map32 of 2^31+1 pairs, 2 values", parseEnv, goodEnv([]byte{0xdf, 0x80, 0, 0, 1, 1, 2})},
		{"nesting of 100 arrays", parseEnv, goodEnv(nested(100))},
		{"nesting of 100000 arrays", parseEnv, goodEnv(nested(100000))},
		{"nesting of 100 maps", parseEnv, goodEnv(append(bytes.Repeat([]byte{0x81, 0xc0}, 100), 0x80))},
		{"never-used type byte 0xc1", parseEnv, goodEnv([]byte{0xc1})},

		{"ack empty", parseAck, nil},
		{"ack array of 2", parseAck, ackBody(2, mpUint(1), mpUint(1), nil)},
		{"ack status 0", parseAck, ackBody(3, mpUint(1), mpUint(0), mpStr(""))},
		{"ack status 4", parseAck, ackBody(3, mpUint(1), mpUint(4), mpStr(""))},
		{"ack status 256", parseAck, ackBody(3, mpUint(1), mpUint(256), mpStr(""))},
		{"ack status 2^32+1", parseAck, ackBody(3, mpUint(1), mpUint(1<<32+1), mpStr(""))},
		{"ack error as binary", parseAck, ackBody(3, mpUint(1), mpUint(3), mpBin([]byte("boom")))},
		{"ack error nil", parseAck, ackBody(3, mpUint(1), mpUint(1), []byte{0xc0})},
		{"ack error truncated", parseAck, ackBody(3, mpUint(1), mpUint(3), mpStr(strings.Repeat("x", 300))[:200])},
		{"ack error length 2^32-1", parseAck, ackBody(3, mpUint(1), mpUint(3), []byte{0xdb, 0xff, 0xff, 0xff, 0xff, 'x'})},
		{"ack trailing byte", parseAck, append(goodAck(), 0xc0)},
		{"ack nesting of 100 arrays", parseAck, goodAck(nested(100))},
		{"old ack nesting of 100 arrays", parseAck, goodAck3(nested(100))},
		{"ack array of 4 with 3 elements", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""))},
		{"ack reply as a string", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), mpStr("reply"))},
		{"ack reply nil", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), []byte{0xc0})},
		{"ack reply an integer", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), mpUint(7))},
		{"ack reply an array", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), cat(mpArray(1), mpBin([]byte("r"))))},
		{"ack reply truncated", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), mpBin(pattern(300))[:200])},
		{"ack reply length 2^32-1", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 'x'})},
		{"ack reply length 2^16-1", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), []byte{0xc5, 0xff, 0xff, 'x'})},
		{"ack reply bin8 past the end", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), []byte{0xc4, 0xff, 'x'})},
		{"ack reply header cut", parseAck, ackBody(4, mpUint(1), mpUint(2), mpStr(""), []byte{0xc6, 0, 0})},
		{"ack trailing byte after reply", parseAck, append(goodAck(), 0)},
		{"ack array32 claims 2^32-1", parseAck, append([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, goodAck()[1:]...)},

		{"hello empty", parseHel, nil},
		{"hello array of 0", parseHel, mpArray(0)},
		{"hello peer not an array", parseHel, helloBody(mpStr("node1"))},
		{"hello peer array of 4", parseHel, helloBody(peerBody(4, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), nil))},
		{"hello id of 15 bytes", parseHel, helloBody(peerBody(5, id15, mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(0)))},
		{"hello id as a string", parseHel, helloBody(peerBody(5, mpStr(string(peerID)), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(0)))},
		{"hello zero id", parseHel, helloBody(peerBody(5, mpBin(make([]byte, 16)), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(0)))},
		{"hello empty name", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr(""), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(0)))},
		{"hello name as binary", parseHel, helloBody(peerBody(5, mpBin(peerID), mpBin([]byte("n")), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(0)))},
		{"hello address without port", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("192.0.2.1"), mpUint(0)))},
		{"hello host name address", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("node1:4000"), mpUint(0)))},
		{"hello empty address", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr(""), mpUint(0)))},
		{"hello port 65536", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:65536"), mpUint(0)))},
		{"hello started 2^63", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(1<<63)))},
		{"hello started float", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), []byte{0xca, 0, 0, 0, 0}))},
		{"hello started truncated", parseHel, helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr("d"), mpStr("192.0.2.1:1"), []byte{0xd3, 0, 0}))},
		{"hello peer nesting of 100 arrays", parseHel, helloBody(goodPeer(nested(100)))},
		{"hello nesting of 100 arrays", parseHel, helloBody(goodPeer(), nested(100))},
		{"hello trailing byte", parseHel, append(helloBody(goodPeer()), 0)},
		{"hello peer array claims 2^32-1", parseHel, helloBody(append([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, goodPeer()[1:]...))},

		{"ping empty", parsePin, nil},
		{"ping array of 0", parsePin, mpArray(0)},
		{"ping nonce negative", parsePin, pingBody([]byte{0xe0})},
		{"ping nonce nil", parsePin, pingBody([]byte{0xc0})},
		{"ping trailing byte", parsePin, append(pingBody(mpUint(1)), 1)},
		{"ping nesting of 100 arrays", parsePin, pingBody(mpUint(1), nested(100))},

		{"pong empty", parsePon, nil},
		{"pong array of 1", parsePon, cat(mpArray(1), mpUint(1))},
		{"pong without nonce", parsePon, cat(mpArray(2), goodPeer(), mpUint(1))},
		{"pong empty name", parsePon, pongBody(mpUint(1), peerBody(5, mpBin(peerID), mpStr(""), mpStr("d"), mpStr("192.0.2.1:1"), mpUint(0)))},
		{"pong trailing byte", parsePon, append(pongBody(mpUint(1), goodPeer()), 0)},
	}
	for _, tc := range tests {
		t.Run(tc.p.name+"/"+tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.p.parse(tc.body)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			// The body is at most a few hundred kilobytes: any answer that
			// takes long is walking a claimed count, not the bytes.
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
	// Every parser refuses every other parser's body or at least does not
	// panic on it, and every parser refuses garbage.
	for _, p := range parsers {
		for _, body := range [][]byte{{0xc1}, {0xff}, {0x9f}, {0xdd, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0x91}, 10000)} {
			if err := p.parse(body); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s(% x...): %v, want ErrMalformed", p.name, body[:min(len(body), 8)], err)
			}
		}
	}
}

// trailingValues are msgpack values of every family, as a later version
// might append them to a body.
func trailingValues() map[string][]byte {
	return map[string][]byte{
		"nil":                 {0xc0},
		"false":               {0xc2},
		"true":                {0xc3},
		"fixint":              {0x7f},
		"negative fixint":     {0xe0},
		"uint8":               {0xcc, 0xff},
		"uint16":              {0xcd, 1, 2},
		"uint32":              {0xce, 1, 2, 3, 4},
		"uint64":              {0xcf, 1, 2, 3, 4, 5, 6, 7, 8},
		"int8":                {0xd0, 0x80},
		"int16":               {0xd1, 1, 2},
		"int32":               {0xd2, 1, 2, 3, 4},
		"int64":               {0xd3, 1, 2, 3, 4, 5, 6, 7, 8},
		"float32":             {0xca, 0x3f, 0x80, 0, 0},
		"float64":             {0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0},
		"fixstr":              mpStr("extra"),
		"empty fixstr":        {0xa0},
		"str8":                mpStr(strings.Repeat("s", 200)),
		"str16":               mpStr(strings.Repeat("s", 300)),
		"str32":               mpStr(strings.Repeat("s", 70000)),
		"bin8":                mpBin([]byte{1, 2, 3}),
		"bin16":               mpBin(pattern(300)),
		"bin32":               mpBin(pattern(70000)),
		"fixarray":            cat(mpArray(3), mpUint(1), mpStr("a"), []byte{0xc0}),
		"empty array":         mpArray(0),
		"array16":             cat(mpArray(20), bytes.Repeat([]byte{0x01}, 20)),
		"array32":             cat([]byte{0xdd, 0, 0, 0, 2}, mpStr("x"), mpUint(300)),
		"fixmap":              cat([]byte{0x82}, mpStr("a"), mpUint(1), mpStr("b"), mpArray(1), mpArray(0)),
		"empty map":           {0x80},
		"map16":               cat([]byte{0xde, 0, 1}, mpUint(1), mpBin([]byte("v"))),
		"map32":               cat([]byte{0xdf, 0, 0, 0, 1}, mpStr("k"), []byte{0x81, 0xa1, 'n', 0xc3}),
		"nested 8 deep":       nested(8),
		"fixext1":             {0xd4, 1, 0xaa},
		"fixext2":             {0xd5, 1, 0xaa, 0xbb},
		"fixext4":             {0xd6, 0xff, 0x5f, 0x5e, 0x10, 0x00}, // timestamp 32
		"fixext8":             {0xd7, 0xff, 1, 2, 3, 4, 5, 6, 7, 8}, // timestamp 64
		"fixext16":            cat([]byte{0xd8, 2}, pattern(16)),
		"ext8":                {0xc7, 3, 5, 1, 2, 3},
		"ext8 timestamp":      cat([]byte{0xc7, 12, 0xff}, pattern(12)),
		"ext16":               cat([]byte{0xc8, 1, 0, 7}, pattern(256)),
		"ext32":               cat([]byte{0xc9, 0, 1, 0, 0, 0x80}, pattern(65536)),
		"empty ext8":          {0xc7, 0, 9},
		"map in array in map": cat([]byte{0x81}, mpArray(2), mpUint(1), []byte{0x81, 0xc0, 0xc0}, mpStr("v")),
	}
}

func TestForwardCompatibleBodies(t *testing.T) {
	want := Peer{ID: rawID, Name: "node1", Domain: "default", Addr: netip.MustParseAddrPort("192.0.2.1:4000"), Started: time.Unix(0, -1)}
	for name, v := range trailingValues() {
		t.Run(name, func(t *testing.T) {
			bodies := []struct {
				p    parser
				body []byte
			}{
				{parseEnv, goodEnv(v)},
				{parseEnv, goodEnv(v, v, mpUint(1))},
				{parseAck, goodAck(v)},
				{parseAck, goodAck3(mpBin(nil), v)},
				{parseHel, helloBody(goodPeer(v))},
				{parseHel, helloBody(goodPeer(), v)},
				{parsePin, pingBody(mpUint(7), v)},
				{parsePon, pongBody(mpUint(7), goodPeer(v), v)},
			}
			for _, b := range bodies {
				if err := b.p.parse(b.body); err != nil {
					t.Errorf("%s with a trailing %s: %v", b.p.name, name, err)
				}
			}
			// The known fields are read as before.
			if e, err := ParseEnvelope(goodEnv(v)); err != nil || e.Seq != 42 || e.Mode != Ack || e.From != rawID || string(e.Payload) != "payload" {
				t.Errorf("envelope with a trailing %s: %+v %v", name, e, err)
			}
			if a, err := ParseAck(goodAck(v)); err != nil || !sameAck(a, wantGoodAck) {
				t.Errorf("ack with a trailing %s: %+v %v", name, a, err)
			}
			if a, err := ParseAck(goodAck3(mpBin(nil), v)); err != nil || !sameAck(a, wantGoodAck3) || a.Reply != nil {
				t.Errorf("ack with an empty reply and a trailing %s: %+v %v", name, a, err)
			}
			if n, p, err := ParsePong(pongBody(mpUint(7), goodPeer(v), v)); err != nil || n != 7 {
				t.Errorf("pong with a trailing %s: %d %v", name, n, err)
			} else {
				p.Zone = "" // a trailing string in a peer is its zone, the sixth element
				samePeer(t, p, want)
			}
			if n, err := ParsePing(pingBody(mpUint(7), v)); err != nil || n != 7 {
				t.Errorf("ping with a trailing %s: %d %v", name, n, err)
			}
			// The same value cut short anywhere is refused, and so is a body
			// whose array announces the value that is missing.
			for cut := range len(v) {
				if cut > 40 && cut < len(v)-40 && cut%997 != 0 {
					continue // long values: both ends and a sample of the middle
				}
				if err := parseEnv.parse(goodEnv(v[:cut])); !errors.Is(err, ErrMalformed) {
					t.Fatalf("envelope with a trailing %s cut to %d bytes: %v, want ErrMalformed", name, cut, err)
				}
			}
		})
	}
}

func TestUintWidths(t *testing.T) {
	tests := []struct {
		name string
		enc  []byte
		want uint64
	}{
		{"fixint 0", []byte{0x00}, 0},
		{"fixint 127", []byte{0x7f}, 127},
		{"uint8 5", []byte{0xcc, 5}, 5},
		{"uint16 5", []byte{0xcd, 0, 5}, 5},
		{"uint32 5", []byte{0xce, 0, 0, 0, 5}, 5},
		{"uint64 5", []byte{0xcf, 0, 0, 0, 0, 0, 0, 0, 5}, 5},
		{"uint64 max", []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, math.MaxUint64},
		{"int8 5", []byte{0xd0, 5}, 5},
		{"int16 5", []byte{0xd1, 0, 5}, 5},
		{"int32 5", []byte{0xd2, 0, 0, 0, 5}, 5},
		{"int64 5", mpInt64(5), 5},
		{"int64 max", mpInt64(math.MaxInt64), math.MaxInt64},
		{"int16 300", []byte{0xd1, 1, 0x2c}, 300},
	}
	for _, tc := range tests {
		e, err := ParseEnvelope(envBody(4, mpBin(peerID), tc.enc, []byte{0xcc, 2}, mpBin(nil)))
		if err != nil || e.Seq != tc.want || e.Mode != Sync {
			t.Errorf("seq as %s: %d %v %v, want %d", tc.name, e.Seq, e.Mode, err, tc.want)
		}
		n, err := ParsePing(pingBody(tc.enc))
		if err != nil || n != tc.want {
			t.Errorf("nonce as %s: %d %v, want %d", tc.name, n, err, tc.want)
		}
	}
	for _, neg := range [][]byte{{0xff}, {0xe0}, {0xd0, 0xff}, {0xd1, 0x80, 0}, {0xd2, 0xff, 0xff, 0xff, 0xff}, mpInt64(-1), mpInt64(math.MinInt64)} {
		if _, err := ParsePing(pingBody(neg)); !errors.Is(err, ErrMalformed) {
			t.Errorf("nonce % x: %v, want ErrMalformed", neg, err)
		}
	}
}

func TestStartedWidths(t *testing.T) {
	tests := []struct {
		enc  []byte
		want int64
	}{
		{[]byte{0x05}, 5},
		{[]byte{0xff}, -1},
		{[]byte{0xe0}, -32},
		{[]byte{0xd0, 0x80}, -128},
		{[]byte{0xd1, 0x80, 0}, math.MinInt16},
		{[]byte{0xd2, 0x80, 0, 0, 0}, math.MinInt32},
		{mpInt64(math.MinInt64), math.MinInt64},
		{mpInt64(math.MaxInt64), math.MaxInt64},
		{[]byte{0xcc, 200}, 200},
		{[]byte{0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, math.MaxInt64},
	}
	for _, tc := range tests {
		p, err := ParseHello(helloBody(peerBody(5, mpBin(peerID), mpStr("n"), mpStr(""), mpStr("[::1]:1"), tc.enc)))
		if err != nil || p.Started.UnixNano() != tc.want {
			t.Errorf("started % x: %v %v, want %d", tc.enc, p.Started.UnixNano(), err, tc.want)
		}
	}
	// The encoder picks the shortest form; negatives below -32 as int64.
	for _, v := range []int64{0, 1, 127, 128, -1, -32, -33, math.MinInt64, math.MaxInt64} {
		d := decoder{b: appendInt(nil, v)}
		if got := d.int(); d.err != nil || got != v || d.off != len(d.b) {
			t.Errorf("appendInt(%d) read back as %d, %v", v, got, d.err)
		}
	}
}

func TestFailKeepsFirstError(t *testing.T) {
	d := decoder{b: []byte{0xc1, 1, 2}}
	d.uint()
	first := d.err
	d.fail("second")
	d.bin()
	d.str()
	d.array()
	if d.err != first || !errors.Is(d.err, ErrMalformed) || !strings.Contains(d.err.Error(), "0xc1") {
		t.Fatalf("err = %v, want the first error kept", d.err)
	}
	if v := d.uint(); v != 0 {
		t.Errorf("read after an error = %d, want 0", v)
	}
}
