package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; the f.Add calls below add
// a few bodies built in code so the seeds follow the encoder if it changes.

func seedPeer() Peer { return testPeers()["utf-8 names"] }

// parseBody hands a frame body to the parser for its type and reports the
// error; a parser must never panic, and every refusal wraps ErrMalformed.
func parseBody(t Type, body []byte) error {
	var err error
	switch t {
	case TypeHello:
		_, err = ParseHello(body)
	case TypeAck:
		_, err = ParseAck(body)
	case TypePing, TypeLeave:
		_, err = ParsePing(body)
	case TypePong:
		_, _, err = ParsePong(body)
	default:
		_, err = ParseEnvelope(body)
	}
	return err
}

func FuzzReader(f *testing.F) {
	var stream []byte
	stream = AppendHello(stream, seedPeer())
	stream = AppendMessage(stream, FirstApp, Envelope{From: testID(1), Seq: 1, Mode: Ack, Payload: []byte("hi")})
	stream = AppendAck(stream, AckBody{Seq: 1, Status: Received})
	stream = AppendPing(stream, TypePing, 7)
	stream = AppendPong(stream, 7, seedPeer())
	stream = AppendPing(stream, TypeLeave, 8)
	f.Add(stream)
	f.Add(stream[:len(stream)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1 << 20
		r := NewReader(bytes.NewReader(data), max)
		// Each frame takes at least a header, so more iterations than
		// bytes means Next returned without consuming anything.
		for range len(data) + 1 {
			calls := 0
			f, err := r.Next(func() { calls++ })
			if calls > 1 {
				t.Fatalf("started called %d times for one frame", calls)
			}
			if err != nil {
				if err == io.EOF {
					if calls != 0 {
						t.Fatal("started called before a clean end of stream")
					}
					return
				}
				if !(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrMagic) || errors.Is(err, ErrVersion) ||
					errors.Is(err, ErrFlags) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge)) {
					t.Fatalf("Next: unexpected error %v", err)
				}
				return
			}
			if calls != 1 {
				t.Fatalf("started called %d times for a frame", calls)
			}
			if len(f.Body) > max || f.Flags != 0 || f.Type == 0 || (f.Type > TypeLeave && f.Type < FirstApp) {
				t.Fatalf("Next returned type %d flags %#x body of %d bytes", f.Type, f.Flags, len(f.Body))
			}
			if err := parseBody(f.Type, f.Body); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v body: error %v does not wrap ErrMalformed", f.Type, err)
			}
		}
		t.Fatalf("more than %d frames from %d bytes", len(data)+1, len(data))
	})
}

// checkRefusal fails unless err wraps ErrMalformed.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v does not wrap ErrMalformed", err)
	}
}

// bodyOf checks the header of a re-encoded frame and returns its body.
func bodyOf(t *testing.T, frame []byte, want Type) []byte {
	t.Helper()
	typ, _, n, err := ParseHeader(frame, DefaultMaxFrame)
	if err != nil || typ != want || n != len(frame)-HeaderLen {
		t.Fatalf("re-encoded header: %v %d %v", typ, n, err)
	}
	return frame[HeaderLen:]
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add(AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1 << 40, Mode: Sync, Payload: pattern(300)})[HeaderLen:])
	f.Add(goodEnv(mpStr("extra"), nested(3)))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := ParseEnvelope(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		frame := AppendMessage(nil, FirstApp, e)
		e2, err := ParseEnvelope(bodyOf(t, frame, FirstApp))
		if err != nil {
			t.Fatalf("re-encoded envelope refused: %v", err)
		}
		if e2.From != e.From || e2.Seq != e.Seq || e2.Mode != e.Mode || !bytes.Equal(e2.Payload, e.Payload) {
			t.Fatalf("re-encoded envelope differs: %+v, was %+v", e2, e)
		}
		if again := AppendMessage(nil, FirstApp, e2); !bytes.Equal(again, frame) {
			t.Fatal("encoding is not deterministic")
		}
	})
}

func FuzzParseAck(f *testing.F) {
	f.Add(AppendAck(nil, AckBody{Seq: 300, Status: Failed, Err: "handler failed"})[HeaderLen:])
	f.Add(goodAck(mpArray(0)))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := ParseAck(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if a.Status < Received || a.Status > Failed {
			t.Fatalf("accepted status %d", a.Status)
		}
		frame := AppendAck(nil, a)
		a2, err := ParseAck(bodyOf(t, frame, TypeAck))
		if err != nil {
			t.Fatalf("re-encoded ack refused: %v", err)
		}
		if a2 != a {
			t.Fatalf("re-encoded ack differs: %+v, was %+v", a2, a)
		}
	})
}

// samePeerValue is samePeer's check without the testing helper output,
// for the fuzzers.
func samePeerValue(a, b Peer) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Domain == b.Domain && a.Addr == b.Addr &&
		a.Started.Equal(b.Started)
}

func FuzzParseHello(f *testing.F) {
	f.Add(AppendHello(nil, seedPeer())[HeaderLen:])
	f.Add(helloBody(goodPeer(mpUint(1)), mpStr("x")))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseHello(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if p.ID == (ID{}) || p.Name == "" || !p.Addr.IsValid() {
			t.Fatalf("accepted a peer without id, name or address: %+v", p)
		}
		frame := AppendHello(nil, p)
		p2, err := ParseHello(bodyOf(t, frame, TypeHello))
		if err != nil {
			t.Fatalf("re-encoded hello refused: %v (peer %+v)", err, p)
		}
		if !samePeerValue(p, p2) {
			t.Fatalf("re-encoded hello differs: %+v, was %+v", p2, p)
		}
	})
}

func FuzzParsePong(f *testing.F) {
	f.Add(AppendPong(nil, 99, seedPeer())[HeaderLen:])
	f.Add(pongBody(mpUint(1), goodPeer(), nested(2)))
	f.Add(AppendPing(nil, TypePing, 99)[HeaderLen:])
	f.Fuzz(func(t *testing.T, body []byte) {
		nonce, p, err := ParsePong(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		frame := AppendPong(nil, nonce, p)
		nonce2, p2, err := ParsePong(bodyOf(t, frame, TypePong))
		if err != nil {
			t.Fatalf("re-encoded pong refused: %v (peer %+v)", err, p)
		}
		if nonce2 != nonce || !samePeerValue(p, p2) {
			t.Fatalf("re-encoded pong differs: %d %+v, was %d %+v", nonce2, p2, nonce, p)
		}
	})
}
