package manager

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// deltaReflect is delta without its codec: what msgpack's reflection (and
// so every earlier release) writes and reads for the same tags.
type deltaReflect delta

func TestDeltaCodecMatchesReflection(t *testing.T) {
	cases := []delta{
		{},
		{ID: "a", Base: 1, Version: 2, Origin: "n1", Access: 3},
		{ID: "abc", Old: "old", Base: math.MaxUint64, BaseOrigin: "n2", Version: 1 << 40, Origin: "n1",
			Created: -1, Access: math.MinInt64, MaxInactive: math.MaxInt64,
			Set: map[string][]byte{"k": {1, 2, 3}}, Del: []string{"x", "", "y"}, Full: true, Sync: true},
		{ID: "s", Set: map[string][]byte{"empty": {}}, Del: []string{"only"}},
		{ID: "s", Set: map[string][]byte{"nil": nil}},
		{ID: strings.Repeat("x", 40), Origin: strings.Repeat("o", 300), Old: strings.Repeat("r", 70000),
			Set: map[string][]byte{strings.Repeat("k", 31): bytes.Repeat([]byte{7}, 300)}, Del: make([]string, 20)},
		{ID: "big", Set: map[string][]byte{"v": bytes.Repeat([]byte{1}, 70000)}, Del: make([]string, 70000)},
	}
	r := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	maybe := func() bool { return r.IntN(2) == 0 }
	for range 500 {
		d := delta{ID: str(), Base: r.Uint64() >> r.IntN(64), Version: r.Uint64() >> r.IntN(64), Origin: str(),
			Access: int64(r.Uint64()) >> r.IntN(64), Full: maybe(), Sync: maybe()}
		if maybe() {
			d.Old, d.BaseOrigin = str(), str()
		}
		if maybe() {
			d.Created, d.MaxInactive = int64(r.Uint64())>>r.IntN(64), int64(r.IntN(1000))-500
		}
		if maybe() {
			// One attribute: a map's order is Go's, random, in both codecs.
			d.Set = map[string][]byte{str(): []byte(str())}
		}
		for range r.IntN(4) {
			d.Del = append(d.Del, str())
		}
		cases = append(cases, d)
	}
	for i, d := range cases {
		got, err := msgpack.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		want, err := msgpack.Marshal(deltaReflect(d))
		if err != nil {
			t.Fatal(err)
		}
		direct, err := marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(direct, got) {
			t.Fatalf("case %d: marshal wrote %x, the Encoder %x", i, direct, got)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: codec wrote\n%x\nreflection writes\n%x\nfor %+v", i, got, want, d)
		}
		var back delta
		if err := decodeDelta(want, &back, knownNames{}); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		var ref deltaReflect
		if err := decode(want, &ref); err != nil {
			t.Fatalf("case %d: reflection: %v", i, err)
		}
		if !reflect.DeepEqual(back, delta(ref)) {
			t.Fatalf("case %d: codec read %+v, reflection reads %+v", i, back, ref)
		}
	}
}

// The codec reads every encoding of a field that the reflection codec
// reads, in any order, and refuses what it refuses.
func TestDeltaCodecDecodes(t *testing.T) {
	enc := func(fn func(e *msgpack.Encoder)) []byte {
		var b bytes.Buffer
		e := msgpack.NewEncoder(&b)
		fn(e)
		return b.Bytes()
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"compact integers, fields reordered", enc(func(e *msgpack.Encoder) {
			e.EncodeMapLen(4)
			e.EncodeString("v")
			e.EncodeUint(7)
			e.EncodeString("a")
			e.EncodeInt(-3)
			e.EncodeString("i")
			e.EncodeString("x")
			e.EncodeString("b")
			e.EncodeUint8(6)
		}), false},
		{"nil map and list", enc(func(e *msgpack.Encoder) {
			e.EncodeMapLen(2)
			e.EncodeString("s")
			e.EncodeNil()
			e.EncodeString("d")
			e.EncodeNil()
		}), false},
		{"unknown field", enc(func(e *msgpack.Encoder) {
			e.EncodeMapLen(1)
			e.EncodeString("zz")
			e.EncodeUint(1)
		}), true},
		{"string for a version", enc(func(e *msgpack.Encoder) {
			e.EncodeMapLen(1)
			e.EncodeString("v")
			e.EncodeString("7")
		}), true},
		{"an array, not a map", enc(func(e *msgpack.Encoder) { e.EncodeArrayLen(0) }), true},
		// msgpack zeroes the value itself: an empty delta, refused by
		// handleDelta for its empty id.
		{"nil", enc(func(e *msgpack.Encoder) { e.EncodeNil() }), false},
		{"truncated", enc(func(e *msgpack.Encoder) {
			e.EncodeMapLen(3)
			e.EncodeString("i")
		}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got delta
			err := decodeDelta(tt.in, &got, knownNames{})
			var ref deltaReflect
			refErr := decode(tt.in, &ref)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.name != "an array, not a map" && (refErr != nil) != tt.wantErr {
				t.Errorf("reflection: err = %v, want error %v (the codecs disagree)", refErr, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, delta(ref)) {
				t.Errorf("codec read %+v, reflection reads %+v", got, ref)
			}
		})
	}
}

func BenchmarkDeltaCodec(b *testing.B) {
	d := delta{ID: "0123456789abcdef0123456789abcdef", Base: 41, BaseOrigin: "n1", Version: 42, Origin: "n1",
		Access: 1 << 60, Set: map[string][]byte{"count": {0x2a}}, Sync: true}
	for _, c := range []struct {
		name string
		v    any
		into func() any
	}{
		{"codec", d, nil},
		{"reflection", deltaReflect(d), func() any { return new(deltaReflect) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := marshal(c.v)
				if err != nil {
					b.Fatal(err)
				}
				var err2 error
				if c.into == nil {
					var d delta
					err2 = decodeDelta(p, &d, knownNames{})
				} else {
					err2 = decode(p, c.into())
				}
				if err := err2; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The parser and the reflection codec (checked first, as decode does) agree
// on every body: both refuse it, or both read the same delta. Deep and huge
// claims are in the seeds.
func FuzzParseDelta(f *testing.F) {
	for _, d := range []delta{
		{ID: "a", Version: 1, Origin: "B", Full: true, Set: map[string][]byte{"k": {0x01}, "e": {}}, Created: 1, Access: -2, MaxInactive: 1e9},
		{ID: "a", Old: "z", Base: 1, BaseOrigin: "C", Version: math.MaxUint64, Origin: "B", Del: []string{"x", ""}, Sync: true},
		{},
	} {
		f.Add(d.appendMsgpack(nil))
		b, err := msgpack.Marshal(deltaReflect(d))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xc0})
	f.Add([]byte{0x81, 0xa1, 's', 0xdf, 0xff, 0xff, 0xff, 0xff}) // a map of 4 billion in 5 bytes
	f.Add([]byte{0x81, 0xa1, 'd', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{0x81, 0xa1, 'i'}, bytes.Repeat([]byte{0x91}, 1<<16)...))
	f.Add([]byte{0x81, 0xa1, 'v', 0xd0, 0x80})      // a negative int8 for a version
	f.Add([]byte{0x81, 0xa1, 'i', 0xc4, 0x01, 'x'}) // binary for a string
	f.Add([]byte{0x81, 0xa1, 'i', 0xa1, 'x', 0x00}) // a byte after the value
	f.Add([]byte{0x82, 0xa1, 'i', 0xa1, 'x', 0xa1}) // truncated
	f.Fuzz(func(t *testing.T, p []byte) {
		var got delta
		err := parseDelta(p, &got, knownNames{})
		var ref deltaReflect
		refErr := decode(p, &ref)
		switch {
		case err == nil && refErr != nil:
			t.Fatalf("%x: parsed %+v, reflection refuses: %v", p, got, refErr)
		case err != nil && refErr == nil && !asArray(p) && !strings.Contains(err.Error(), "extension type"):
			t.Fatalf("%x: refused (%v), reflection reads %+v", p, err, ref)
		case err == nil && !reflect.DeepEqual(got, delta(ref)):
			t.Fatalf("%x: parsed %+v, reflection reads %+v", p, got, ref)
		}
	})
}

// asArray reports whether p is a struct written as an array, which msgpack's
// reflection reads and neither delta codec does: no node writes one (nor
// an extension type around a map, the other form only reflection reads).
func asArray(p []byte) bool {
	return len(p) > 0 && (p[0] >= 0x90 && p[0] <= 0x9f || p[0] == 0xdc || p[0] == 0xdd)
}

// A delta met by msgpack's reflection (inside another value) is read by the
// same parser.
func TestDeltaDecodedByReflection(t *testing.T) {
	d := delta{ID: "a", Base: 1, BaseOrigin: "n1", Version: 2, Origin: "n2", Set: map[string][]byte{"k": {1}}, Del: []string{"x"}}
	b, err := msgpack.Marshal([]delta{d, {ID: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []delta
	if err := msgpack.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if want := []delta{d, {ID: "b"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("read %+v, want %+v", got, want)
	}
	if err := msgpack.Unmarshal([]byte{0x91, 0x81, 0xa2, 'z', 'z', 0x01}, &got); err == nil {
		t.Error("an unknown field read without error")
	}
}

// A node name the parse is told of is used as it is: two allocations fewer
// for a delta whose origin and base origin are the sender and this node.
func TestParseDeltaKnownNames(t *testing.T) {
	d := delta{ID: "a", Base: 1, BaseOrigin: "node1", Version: 2, Origin: "node2", Set: map[string][]byte{"k": {1}}}
	p := d.appendMsgpack(nil)
	parse := func(known knownNames) float64 {
		return testing.AllocsPerRun(100, func() {
			var got delta
			if err := parseDelta(p, &got, known); err != nil || !reflect.DeepEqual(got, d) {
				t.Fatalf("parsed %+v (%v), want %+v", got, err, d)
			}
		})
	}
	without, with := parse(knownNames{}), parse(knownNames{"node2", "node1"})
	t.Logf("allocations per parse: %v, %v with the names known", without, with)
	if with != without-2 {
		t.Errorf("%v allocations with the names known, want %v", with, without-2)
	}
}
