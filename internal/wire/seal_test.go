package wire

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/flockhq/flock/keyring"
)

func ring(t testing.TB, b ...byte) *keyring.Keyring {
	t.Helper()
	var keys [][]byte
	for _, c := range b {
		keys = append(keys, bytes.Repeat([]byte{c}, keyring.Size))
	}
	r, err := keyring.New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// keyed is one handshaken connection, both ends.
type keyed struct {
	cConn, sConn net.Conn
	cRd, sRd     *Reader
	cSeal, sSeal *Sealer
}

// handshake connects a caller holding cring to an acceptor holding sring.
func handshake(t *testing.T, cring, sring *keyring.Keyring) (*keyed, error, error) {
	t.Helper()
	c, s := net.Pipe()
	t.Cleanup(func() { c.Close(); s.Close() })
	deadline := time.Now().Add(5 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	k := &keyed{cConn: c, sConn: s, cRd: NewReader(c, 1<<20), sRd: NewReader(s, 1<<20)}
	serr := make(chan error, 1)
	go func() {
		f, err := k.sRd.Next(nil)
		if err != nil {
			serr <- err
			return
		}
		answer, seal, err := ServerHandshake(f, k.sRd, sring)
		if err != nil {
			s.Close()
			serr <- err
			return
		}
		k.sSeal = seal
		_, err = s.Write(answer)
		serr <- err
	}()
	var cerr error
	k.cSeal, cerr = ClientHandshake(c, k.cRd, cring)
	if cerr != nil {
		c.Close()
	}
	return k, cerr, <-serr
}

// send writes b from the caller's side while the acceptor reads.
func send(k *keyed, b []byte) {
	go k.cConn.Write(b)
}

func TestSealedRoundTrip(t *testing.T) {
	k, cerr, serr := handshake(t, ring(t, 1), ring(t, 1))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	var stream []byte
	stream = k.cSeal.Seal(stream, AppendHello(nil, seedPeer()))
	for i := range 3 {
		stream = k.cSeal.Seal(stream, AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: uint64(i + 1), Payload: []byte("secret-payload")}))
	}
	if bytes.Contains(stream, []byte("secret-payload")) || bytes.Contains(stream, []byte(seedPeer().Name)) {
		t.Fatal("plaintext visible on the wire")
	}
	send(k, stream)
	if f, err := k.sRd.Next(nil); err != nil || f.Type != TypeHello || f.Flags != 0 {
		t.Fatalf("hello: %v %v", f.Type, err)
	}
	for i := range 3 {
		f, err := k.sRd.Next(nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ParseEnvelope(f.Body)
		if err != nil || e.Seq != uint64(i+1) || string(e.Payload) != "secret-payload" {
			t.Fatalf("message %d: %+v %v", i, e, err)
		}
	}
	// And back: an ack sealed by the acceptor.
	go k.sConn.Write(k.sSeal.Seal(nil, AppendAck(nil, AckBody{Seq: 3, Status: Applied, Reply: []byte("r")})))
	f, err := k.cRd.Next(nil)
	if err != nil || f.Type != TypeAck {
		t.Fatalf("ack: %v %v", f.Type, err)
	}
	if a, err := ParseAck(f.Body); err != nil || a.Seq != 3 || string(a.Reply) != "r" {
		t.Fatalf("ack %+v %v", a, err)
	}
}

// TestSealedRefusals: every way of getting a frame past a keyed reader
// without the connection's keys fails, and closes nothing silently.
func TestSealedRefusals(t *testing.T) {
	hello := AppendHello(nil, seedPeer())
	msg := func(seq uint64) []byte {
		return AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: seq, Payload: []byte("x")})
	}
	tests := []struct {
		name string
		// frames builds what the caller's side sends, given the sealer of
		// this connection and of another one with the same key.
		frames func(seal, other *Sealer) [][]byte
		// good is how many frames read fine before the refusal.
		good int
	}{
		{"clear frame after the handshake", func(seal, _ *Sealer) [][]byte { return [][]byte{hello} }, 0},
		{"flipped body bit", func(seal, _ *Sealer) [][]byte {
			b := seal.Seal(nil, hello)
			b[HeaderLen+3] ^= 1
			return [][]byte{b}
		}, 0},
		{"changed header type", func(seal, _ *Sealer) [][]byte {
			b := seal.Seal(nil, msg(1))
			b[5] = byte(FirstApp + 1)
			return [][]byte{b}
		}, 0},
		{"truncated tag", func(seal, _ *Sealer) [][]byte {
			b := seal.Seal(nil, hello)
			b = b[:len(b)-1]
			b[11]--
			return [][]byte{b}
		}, 0},
		{"replayed frame", func(seal, _ *Sealer) [][]byte {
			a := seal.Seal(nil, hello)
			return [][]byte{a, a}
		}, 1},
		{"reordered frames", func(seal, _ *Sealer) [][]byte {
			a := seal.Seal(nil, hello)
			b := seal.Seal(nil, msg(1))
			c := seal.Seal(nil, msg(2))
			return [][]byte{a, c, b}
		}, 1},
		{"dropped frame", func(seal, _ *Sealer) [][]byte {
			a := seal.Seal(nil, hello)
			seal.Seal(nil, msg(1))
			return [][]byte{a, seal.Seal(nil, msg(2))}
		}, 1},
		{"frame of another connection with the same key", func(seal, other *Sealer) [][]byte {
			return [][]byte{other.Seal(nil, hello)}
		}, 0},
		{"tag shorter than a tag", func(seal, _ *Sealer) [][]byte {
			return [][]byte{{'F', 'L', 'K', 'T', 1, byte(TypeHello), FlagAuth, 0, 0, 0, 0, 3, 1, 2, 3}}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, cerr, serr := handshake(t, ring(t, 1), ring(t, 1))
			other, cerr2, serr2 := handshake(t, ring(t, 1), ring(t, 1))
			if err := errors.Join(cerr, serr, cerr2, serr2); err != nil {
				t.Fatal(err)
			}
			send(k, bytes.Join(tt.frames(k.cSeal, other.cSeal), nil))
			for i := range tt.good {
				if _, err := k.sRd.Next(nil); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			if f, err := k.sRd.Next(nil); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("got %v frame, err %v; want ErrUnauthenticated", f.Type, err)
			}
		})
	}
}

func TestHandshakeRefusals(t *testing.T) {
	t.Run("unknown key", func(t *testing.T) {
		_, cerr, serr := handshake(t, ring(t, 1), ring(t, 2))
		if !errors.Is(serr, keyring.ErrUnknownKey) || cerr == nil {
			t.Fatalf("caller %v, acceptor %v", cerr, serr)
		}
	})
	t.Run("a rotation's second key opens", func(t *testing.T) {
		_, cerr, serr := handshake(t, ring(t, 2), ring(t, 1, 2))
		if cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
	})
	t.Run("acceptor without the key cannot prove it", func(t *testing.T) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := ring(t, 1)
		go func() {
			rd := NewReader(s, 1<<10)
			f, err := rd.Next(nil)
			if err != nil {
				return
			}
			a, _ := ParseAuth(f.Body)
			a.Proof = bytes.Repeat([]byte{9}, 32) // guessed
			s.Write(AppendAuth(nil, a))
		}()
		if _, err := ClientHandshake(c, NewReader(c, 1<<10), r); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("removed key ends the connection", func(t *testing.T) {
		sr := ring(t, 1, 2)
		k, cerr, serr := handshake(t, ring(t, 1), sr)
		if cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
		send(k, k.cSeal.Seal(nil, hello()))
		if _, err := k.sRd.Next(nil); err != nil {
			t.Fatal(err)
		}
		if err := sr.Set(bytes.Repeat([]byte{2}, keyring.Size)); err != nil {
			t.Fatal(err)
		}
		send(k, k.cSeal.Seal(nil, hello()))
		if _, err := k.sRd.Next(nil); !errors.Is(err, ErrKeyRemoved) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("sealed frame to a reader without keys", func(t *testing.T) {
		k, _, _ := handshake(t, ring(t, 1), ring(t, 1))
		b := k.cSeal.Seal(nil, hello())
		_, err := NewReader(bytes.NewReader(b), 1<<10).Next(nil)
		if !errors.Is(err, ErrFlags) {
			t.Fatalf("err %v", err)
		}
	})
}

func hello() []byte { return AppendHello(nil, seedPeer()) }

func TestParseAuth(t *testing.T) {
	a := Auth{Key: keyring.ID{1, 2, 3, 4}, Proof: bytes.Repeat([]byte{5}, 32)}
	a.Nonce[0] = 7
	f := AppendAuth(nil, a)
	got, err := ParseAuth(bodyOf(t, f, TypeAuth))
	if err != nil || got.Key != a.Key || got.Nonce != a.Nonce || !bytes.Equal(got.Proof, a.Proof) {
		t.Fatalf("%+v %v", got, err)
	}
	for _, body := range [][]byte{nil, {0x90}, mpArray(3), bodyOf(t, AppendAuth(nil, Auth{}), TypeAuth)[:5]} {
		if _, err := ParseAuth(body); !errors.Is(err, ErrMalformed) {
			t.Fatalf("% x: %v", body, err)
		}
	}
}

func FuzzParseAuth(f *testing.F) {
	f.Add(bodyOf(f, AppendAuth(nil, Auth{Key: keyring.ID{1}}), TypeAuth))
	f.Add(bodyOf(f, AppendAuth(nil, Auth{Key: keyring.ID{1}, Proof: make([]byte, 32)}), TypeAuth))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := ParseAuth(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		again, err := ParseAuth(bodyOf(t, AppendAuth(nil, a), TypeAuth))
		if err != nil || again.Key != a.Key || again.Nonce != a.Nonce || !bytes.Equal(again.Proof, a.Proof) {
			t.Fatalf("re-encoded auth differs: %+v %v", again, err)
		}
	})
}

// FuzzSealedReader feeds a keyed reader arbitrary bytes: never a panic,
// never a frame that did not open.
func FuzzSealedReader(f *testing.F) {
	r := ring(f, 1)
	st, err := r.Primary().Derive(make([]byte, 32), make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	seal := &Sealer{aead: st.Client, key: r.Primary()}
	var stream []byte
	stream = seal.Seal(stream, hello())
	stream = seal.Seal(stream, AppendMessage(nil, FirstApp, Envelope{From: testID(1), Seq: 1, Payload: []byte("p")}))
	f.Add(stream)
	f.Add(hello())
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data), 1<<16)
		rd.open = &opener{aead: st.Client, key: r.Primary()}
		for range len(data) + 1 {
			f, err := rd.Next(nil)
			if err != nil {
				return
			}
			if parseBody(f.Type, f.Body) != nil && f.Type >= FirstApp {
				// A sealed frame that opened came from the sealer: the
				// fuzzer cannot forge one.
				t.Fatalf("a frame that opened does not parse: %v", f.Type)
			}
		}
	})
}
