package manager

import (
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestDecodeRefusesWhatItDoesNotKnow: a body with a field of no message,
// trailing or deep values, is refused whole.
func TestDecodeRefusesWhatItDoesNotKnow(t *testing.T) {
	known, err := msgpack.Marshal(map[string]any{"i": "abc.n1", "b": 1, "v": 2, "o": "n1", "a": 5})
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := msgpack.Marshal(map[string]any{"i": "abc.n1", "b": 1, "v": 2, "o": "n1", "a": 5, "admin": true})
	if err != nil {
		t.Fatal(err)
	}
	deep := "\x81\xa1s" + strings.Repeat("\x91", 100) + "\xc0"
	tests := []struct {
		name string
		body []byte
		ok   bool
	}{
		{"known fields", known, true},
		{"an unknown field", unknown, false},
		{"trailing bytes", append(append([]byte(nil), known...), 0xc0), false},
		{"nested past the bound", []byte(deep), false},
		{"a map that claims 4 billion entries", []byte("\x81\xa1s\xdf\xff\xff\xff\xff"), false},
	}
	for _, tc := range tests {
		var d delta
		if err := decode(tc.body, &d); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
