package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheckMsgpack(t *testing.T) {
	good, err := msgpack.Marshal(map[string]any{"a": []any{1, "x", []byte("yz"), map[string]int{"k": -5}}, "b": 3.5, "c": nil, "d": true})
	if err != nil {
		t.Fatal(err)
	}
	deep := func(n int) []byte { // [[[...]]] n deep, empty at the bottom
		return append(bytes.Repeat([]byte{0x91}, n), 0x90)
	}
	tests := []struct {
		name  string
		in    []byte
		depth int
		ok    bool
	}{
		{"a struct of every kind", good, 8, true},
		{"nesting within the bound", deep(15), 16, true},
		{"nesting past the bound", deep(16), 16, false},
		{"a million levels", deep(1 << 20), 16, false},
		{"map32 of 4 billion in 5 bytes", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, 16, false},
		{"array32 longer than the bytes", append([]byte{0xdd, 0, 0, 1, 0}, bytes.Repeat([]byte{1}, 255)...), 16, false},
		{"array32 as long as the bytes", append([]byte{0xdd, 0, 0, 1, 0}, bytes.Repeat([]byte{1}, 256)...), 16, true},
		{"bin32 past the end", []byte{0xc6, 0x7f, 0xff, 0xff, 0xff, 1}, 16, false},
		{"str8 past the end", []byte{0xd9, 5, 'a'}, 16, false},
		{"ext32 past the end", []byte{0xc9, 0, 0, 0, 9, 1, 2}, 16, false},
		{"trailing bytes", []byte{0x01, 0x02}, 16, false},
		{"empty", nil, 16, false},
		{"reserved 0xc1", []byte{0xc1}, 16, false},
		{"truncated map", []byte{0x82, 0xa1, 'a', 1}, 16, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckMsgpack(tt.in, tt.depth)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckMsgpack = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v is not ErrMalformed", err)
			}
		})
	}
}

// FuzzCheckMsgpack: whatever the input, the check returns; and what it
// passes, msgpack steps over as one value (its decoding into a type may
// still refuse it: a map key that is not a string, say).
func FuzzCheckMsgpack(f *testing.F) {
	f.Add([]byte{0x90})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add(append(bytes.Repeat([]byte{0x91}, 100), 0x90))
	b, _ := msgpack.Marshal(map[string]any{"a": []any{1, "x", map[string]any{"b": []byte{1}}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		if CheckMsgpack(in, 16) != nil {
			return
		}
		dec := msgpack.NewDecoder(bytes.NewReader(in))
		if err := dec.Skip(); err != nil {
			t.Fatalf("passed the check, msgpack cannot step over it: %v", err)
		}
		if dec.Buffered().(*bytes.Reader).Len() != 0 {
			t.Fatal("passed the check with bytes after the value")
		}
	})
}
