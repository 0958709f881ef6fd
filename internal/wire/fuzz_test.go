package wire

import (
	"bytes"
	"errors"
	"io"
	"slices"
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
	case TypeAuth:
		_, err = ParseAuth(body)
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
	stream = AppendAck(stream, AckBody{Seq: 2, Status: Applied, Reply: []byte("answer")})
	stream = AppendPing(stream, TypePing, 7)
	stream = AppendPong(stream, 7, seedPeer())
	stream = AppendPing(stream, TypeLeave, 8)
	f.Add(stream)
	f.Add(stream[:len(stream)-3])
	// A frame over the maximum, then one within it: Skip must find the
	// second.
	f.Add(slices.Concat(AppendAck(nil, AckBody{Seq: 3, Status: Applied, Reply: pattern(300)}), stream))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Twice: with a maximum that lets the seeds' frames through, and
		// with one that refuses most of them, so that Skip is exercised.
		for _, max := range []int{1 << 20, 1 << 8} {
			readAll(t, data, max)
		}
	})
}

// readAll reads frames from data until the stream ends or fails, as the
// receiver and the ack reader do, and checks each step.
func readAll(t *testing.T, data []byte, max int) {
	t.Helper()
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
			if !errors.Is(err, ErrTooLarge) {
				return
			}
			// The ack reader's way on: skip the body, keeping a prefix.
			f, n, err := r.Skip(16)
			if err != nil {
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("Skip: unexpected error %v", err)
				}
				return
			}
			if n <= int64(max) || len(f.Body) != 16 {
				t.Fatalf("Skip kept %d bytes of a refused body of %d", len(f.Body), n)
			}
			if f.Type == TypeAck {
				if _, err := ParseAckSeq(f.Body); err != nil {
					checkRefusal(t, err)
				}
			}
			continue
		}
		if calls != 1 {
			t.Fatalf("started called %d times for a frame", calls)
		}
		if len(f.Body) > max || f.Flags != 0 || f.Type == 0 || (f.Type > TypeAuth && f.Type < FirstApp) {
			t.Fatalf("Next returned type %d flags %#x body of %d bytes", f.Type, f.Flags, len(f.Body))
		}
		if err := parseBody(f.Type, f.Body); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%v body: error %v does not wrap ErrMalformed", f.Type, err)
		}
	}
	t.Fatalf("more than %d frames from %d bytes", len(data)+1, len(data))
}

// checkRefusal fails unless err wraps ErrMalformed.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v does not wrap ErrMalformed", err)
	}
}

// bodyOf checks the header of a re-encoded frame and returns its body.
func bodyOf(t testing.TB, frame []byte, want Type) []byte {
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
	f.Add(AppendAck(nil, AckBody{Seq: 301, Status: Applied, Reply: pattern(300)})[HeaderLen:])
	f.Add(goodAck(mpArray(0)))
	f.Add(goodAck3())
	f.Add(ackBody(4, mpUint(1), mpUint(2), mpStr(""), []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 1}))
	f.Fuzz(func(t *testing.T, body []byte) {
		// ParseAckSeq reads any prefix without panicking; of a body ParseAck
		// accepts, it reads the same sequence number.
		seq, seqErr := ParseAckSeq(body)
		if seqErr != nil {
			checkRefusal(t, seqErr)
		}
		a, err := ParseAck(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if seqErr != nil || seq != a.Seq {
			t.Fatalf("ParseAckSeq = %d, %v; ParseAck read seq %d", seq, seqErr, a.Seq)
		}
		if a.Status < Received || a.Status > Failed {
			t.Fatalf("accepted status %d", a.Status)
		}
		if a.Reply != nil && len(a.Reply) == 0 {
			t.Fatal("an empty reply is not nil")
		}
		frame := AppendAck(nil, a)
		if AckLen(a) != len(frame)-HeaderLen {
			t.Fatalf("AckLen %d, frame body of %d bytes", AckLen(a), len(frame)-HeaderLen)
		}
		a2, err := ParseAck(bodyOf(t, frame, TypeAck))
		if err != nil {
			t.Fatalf("re-encoded ack refused: %v", err)
		}
		if !sameAck(a2, a) {
			t.Fatalf("re-encoded ack differs: %+v, was %+v", a2, a)
		}
	})
}

// samePeerValue is samePeer's check without the testing helper output,
// for the fuzzers.
func samePeerValue(a, b Peer) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Domain == b.Domain && a.Addr == b.Addr && a.Zone == b.Zone &&
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
