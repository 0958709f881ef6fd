package wire

// Cross-checks against an independent msgpack implementation: what the hand
// written encoder produces is what a generic decoder reads, and what a
// generic encoder produces (with its own choice of widths) is what the hand
// written parsers accept.

import (
	"bytes"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// unmarshalAll decodes body as one msgpack value that uses the whole body.
func unmarshalAll(t *testing.T, body []byte) []any {
	t.Helper()
	r := bytes.NewReader(body)
	var v []any
	if err := msgpack.NewDecoder(r).Decode(&v); err != nil {
		t.Fatalf("msgpack: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("msgpack: %d bytes left after the value", r.Len())
	}
	return v
}

// norm makes decoded values comparable: the library returns each integer as
// the Go type of its wire width, which is an encoding detail.
func norm(v any) any {
	switch x := v.(type) {
	case int, int8, int16, int32, int64:
		n := reflect.ValueOf(x).Int()
		if n >= 0 {
			return uint64(n)
		}
		return n
	case uint, uint8, uint16, uint32, uint64:
		return reflect.ValueOf(x).Uint()
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = norm(x[i])
		}
		return out
	case []byte:
		if x == nil {
			return []byte{}
		}
	}
	return v
}

func checkDecoded(t *testing.T, body []byte, want []any) {
	t.Helper()
	got := norm(unmarshalAll(t, body))
	if !reflect.DeepEqual(got, norm(want)) {
		t.Errorf("msgpack decodes the body as\n%#v\nwant\n%#v", got, norm(want))
	}
}

func TestMsgpackReadsEnvelope(t *testing.T) {
	for _, size := range []int{0, 1, 255, 256, 65535, 65536, 1 << 20} {
		for _, seq := range []uint64{0, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64} {
			for _, mode := range []Mode{Async, Ack, Sync} {
				e := Envelope{From: testID(1), Seq: seq, Mode: mode, Payload: pattern(size)}
				body := AppendMessage(nil, FirstApp, e)[HeaderLen:]
				checkDecoded(t, body, []any{e.From[:], seq, uint64(mode), e.Payload})
			}
		}
	}
}

func TestMsgpackReadsAck(t *testing.T) {
	for _, status := range []AckStatus{Received, Applied, Failed} {
		for _, n := range []int{0, 31, 32, 300, 70000} {
			for _, r := range []int{0, 1, 256, 70000} {
				a := AckBody{Seq: 1 << 40, Status: status, Err: strings.Repeat("ü", n/2) + strings.Repeat("!", n%2), Reply: pattern(r)}
				checkDecoded(t, AppendAck(nil, a)[HeaderLen:], []any{a.Seq, uint64(status), a.Err, a.Reply})
			}
		}
	}
}

func peerValue(p Peer) []any {
	v := []any{p.ID[:], p.Name, p.Domain, p.Addr.String(), p.Started.UnixNano()}
	if p.Zone != "" {
		v = append(v, p.Zone)
	}
	return v
}

func TestMsgpackReadsHelloPingPong(t *testing.T) {
	for name, p := range testPeers() {
		t.Run(name, func(t *testing.T) {
			checkDecoded(t, AppendHello(nil, p)[HeaderLen:], []any{peerValue(p)})
			checkDecoded(t, AppendPong(nil, 1<<33, p)[HeaderLen:], []any{uint64(1 << 33), peerValue(p)})
		})
	}
	for _, typ := range []Type{TypePing, TypeLeave} {
		for _, nonce := range []uint64{0, 200, math.MaxUint64} {
			checkDecoded(t, AppendPing(nil, typ, nonce)[HeaderLen:], []any{nonce})
		}
	}
}

// marshal encodes v with the library; compact chooses its shortest integer
// forms, otherwise each integer takes the width of its Go type.
func marshal(t *testing.T, compact bool, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(compact)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParsersReadMsgpack(t *testing.T) {
	id := testID(4)
	payload := pattern(300)
	// Integers as each Go type the library encodes in its own width.
	seqs := []any{uint64(5), uint32(5), uint16(5), uint8(5), int64(5), int32(5), int16(5), int8(5), 5, uint(5),
		uint64(math.MaxUint64), uint64(1 << 40), int64(math.MaxInt64)}
	modes := []any{uint64(2), uint8(2), int64(2), int8(2), 2}
	wantSeq := func(v any) uint64 { return norm(v).(uint64) }
	for _, compact := range []bool{false, true} {
		for _, seq := range seqs {
			for _, mode := range modes {
				body := marshal(t, compact, []any{id[:], seq, mode, payload})
				e, err := ParseEnvelope(body)
				if err != nil {
					t.Errorf("compact %v seq %T mode %T: body % x: %v", compact, seq, mode, body[:30], err)
					continue
				}
				if e.From != id || e.Seq != wantSeq(seq) || e.Mode != Sync || !bytes.Equal(e.Payload, payload) {
					t.Errorf("compact %v seq %T mode %T: %+v", compact, seq, mode, e)
				}
			}
			a, err := ParseAck(marshal(t, compact, []any{seq, uint8(3), "handler failed"}))
			if err != nil || a.Seq != wantSeq(seq) || a.Status != Failed || a.Err != "handler failed" || a.Reply != nil {
				t.Errorf("compact %v ack seq %T: %+v %v", compact, seq, a, err)
			}
			a, err = ParseAck(marshal(t, compact, []any{seq, uint8(2), "", payload}))
			if err != nil || a.Seq != wantSeq(seq) || a.Status != Applied || !bytes.Equal(a.Reply, payload) {
				t.Errorf("compact %v ack with a reply, seq %T: %+v %v", compact, seq, a, err)
			}
			n, err := ParsePing(marshal(t, compact, []any{seq}))
			if err != nil || n != wantSeq(seq) {
				t.Errorf("compact %v ping nonce %T: %d %v", compact, seq, n, err)
			}
		}
		for name, p := range testPeers() {
			for _, started := range []any{p.Started.UnixNano(), int64(p.Started.UnixNano())} {
				pv := []any{p.ID[:], p.Name, p.Domain, p.Addr.String(), started}
				if p.Zone != "" {
					pv = append(pv, p.Zone)
				}
				got, err := ParseHello(marshal(t, compact, []any{pv}))
				if err != nil {
					t.Errorf("compact %v hello %s: %v", compact, name, err)
					continue
				}
				samePeer(t, got, p)
				nonce, got, err := ParsePong(marshal(t, compact, []any{uint32(77), pv}))
				if err != nil || nonce != 77 {
					t.Errorf("compact %v pong %s: %d %v", compact, name, nonce, err)
					continue
				}
				samePeer(t, got, p)
			}
		}
	}
	// The case the encoder never writes itself: a uint64 of 5 in 9 bytes.
	body := marshal(t, false, []any{id[:], uint64(5), uint64(0), []byte{}})
	if body[19] != 0xcf {
		t.Fatalf("library wrote seq as % x, want a uint64 (0xcf)", body[19:28])
	}
	if e, err := ParseEnvelope(body); err != nil || e.Seq != 5 || e.Mode != Async || len(e.Payload) != 0 {
		t.Fatalf("uint64 widths: %+v %v", e, err)
	}
}

func TestParsersSkipMsgpackExtras(t *testing.T) {
	id := testID(5)
	p := Peer{ID: id, Name: "node", Domain: "dom", Addr: netip.MustParseAddrPort("[2001:db8::7]:9000"), Started: time.Unix(1700000000, 5)}
	pv := []any{p.ID[:], p.Name, p.Domain, p.Addr.String(), p.Started.UnixNano()}
	extras := map[string][]any{
		"string":        {"a new field"},
		"integers":      {-1, uint64(math.MaxUint64), int64(math.MinInt64)},
		"floats":        {3.5, float32(1.25)},
		"bools and nil": {true, false, nil},
		"bytes":         {pattern(70000)},
		"nested arrays": {[]any{1, []any{2, []any{"three", []any{}}}}},
		"maps":          {map[string]any{"k": []any{1, 2}, "m": map[string]any{"x": nil}}, map[int]string{1: "a", 2: "b"}},
		"time":          {time.Unix(1, 0), time.Unix(1<<34, 1), time.Date(1900, 1, 1, 0, 0, 0, 5, time.UTC)},
		"many":          make([]any, 100),
	}
	for name, extra := range extras {
		t.Run(name, func(t *testing.T) {
			body := marshal(t, false, append([]any{id[:], uint64(9), uint8(1), []byte("pay")}, extra...))
			if e, err := ParseEnvelope(body); err != nil || e.From != id || e.Seq != 9 || e.Mode != Ack || string(e.Payload) != "pay" {
				t.Errorf("envelope: %+v %v", e, err)
			}
			body = marshal(t, true, append([]any{uint64(9), uint8(2), "", []byte("re")}, extra...))
			if a, err := ParseAck(body); err != nil || !sameAck(a, AckBody{Seq: 9, Status: Applied, Reply: []byte("re")}) {
				t.Errorf("ack: %+v %v", a, err)
			}
			body = marshal(t, true, append([]any{append(append([]any{}, pv...), extra...)}, extra...))
			want := p
			if s, ok := extra[0].(string); ok {
				want.Zone = s // a string after the five known fields is the zone
			}
			if got, err := ParseHello(body); err != nil {
				t.Errorf("hello: %v", err)
			} else {
				samePeer(t, got, want)
			}
			body = marshal(t, true, append([]any{uint64(3), append(append([]any{}, pv...), extra...)}, extra...))
			if n, got, err := ParsePong(body); err != nil || n != 3 {
				t.Errorf("pong: %d %v", n, err)
			} else {
				samePeer(t, got, want)
			}
			if n, err := ParsePing(marshal(t, true, append([]any{uint64(3)}, extra...))); err != nil || n != 3 {
				t.Errorf("ping: %d %v", n, err)
			}
		})
	}
}

func TestParsersRefuseMsgpackMistakes(t *testing.T) {
	id := testID(6)
	tests := map[string][]any{
		"id as string":     {string(id[:]), uint64(1), uint8(0), []byte{}},
		"id of 15 bytes":   {id[:15], uint64(1), uint8(0), []byte{}},
		"negative seq":     {id[:], -1, uint8(0), []byte{}},
		"float seq":        {id[:], 1.0, uint8(0), []byte{}},
		"mode 3":           {id[:], 1, 3, []byte{}},
		"payload as str":   {id[:], 1, 0, "payload"},
		"payload nil":      {id[:], 1, 0, nil},
		"three fields":     {id[:], 1, 0},
		"fields as a map?": {map[string]any{"from": id[:]}, 1, 0, []byte{}},
	}
	for name, v := range tests {
		for _, compact := range []bool{false, true} {
			if _, err := ParseEnvelope(marshal(t, compact, v)); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s (compact %v): %v, want ErrMalformed", name, compact, err)
			}
		}
	}
	var deep any = []any{}
	for range 100 {
		deep = []any{deep}
	}
	if _, err := ParseEnvelope(marshal(t, true, []any{id[:], 1, 0, []byte{}, deep})); !errors.Is(err, ErrMalformed) {
		t.Errorf("nesting of 100: %v, want ErrMalformed", err)
	}
}
