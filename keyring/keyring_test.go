package keyring

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, Size) }

func TestParse(t *testing.T) {
	good := Generate()
	raw, _ := base64.StdEncoding.DecodeString(good)
	tests := []struct {
		name    string
		keys    []string
		wantErr string
	}{
		{"one key", []string{good}, ""},
		{"url alphabet without padding", []string{base64.RawURLEncoding.EncodeToString(raw)}, ""},
		{"surrounding spaces", []string{"  " + good + "\n"}, ""},
		{"no key", nil, "at least one key"},
		{"not base64", []string{"not*base64"}, "key 1 is not base64"},
		{"short", []string{base64.StdEncoding.EncodeToString(raw[:16])}, "key 1 has 16 bytes, need 32"},
		{"all zero", []string{base64.StdEncoding.EncodeToString(make([]byte, 32))}, "all zero"},
		{"twice", []string{good, good}, "appears twice"},
		{"too many", strings.Fields(strings.Repeat(good+" ", MaxKeys+1)), "at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse(tt.keys...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(r.IDs()) != len(tt.keys) {
					t.Fatalf("ids %v", r.IDs())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrKey) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), good) {
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
}

func TestPacketRoundTripAndRotation(t *testing.T) {
	a, err := New(key(1))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(key(1))
	ad := []byte("header")
	sealed := a.SealPacket(nil, ad, []byte("hello"))
	if len(sealed) != len("hello")+PacketOverhead {
		t.Fatalf("sealed %d bytes", len(sealed))
	}
	got, err := b.OpenPacket(nil, ad, sealed)
	if err != nil || string(got) != "hello" {
		t.Fatalf("open: %q %v", got, err)
	}
	if bytes.Contains(sealed, []byte("hello")) {
		t.Fatal("plaintext visible")
	}

	// Tampering: any flipped bit of the ciphertext or the header fails.
	for i := range sealed {
		c := bytes.Clone(sealed)
		c[i] ^= 0x10
		if _, err := b.OpenPacket(nil, ad, c); err == nil {
			t.Fatalf("flipped byte %d opened", i)
		}
	}
	if _, err := b.OpenPacket(nil, []byte("Header"), sealed); !errors.Is(err, ErrForged) {
		t.Fatalf("changed header: %v", err)
	}
	other, _ := New(key(2))
	if _, err := other.OpenPacket(nil, ad, sealed); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("other ring: %v", err)
	}
	if _, err := b.OpenPacket(nil, ad, sealed[:10]); !errors.Is(err, ErrForged) {
		t.Fatalf("short: %v", err)
	}

	// Rotation: add the new key, make it first, remove the old one. At
	// every step each node opens what the other seals.
	k1 := a.Primary()
	steps := [][][]byte{{key(1), key(2)}, {key(2), key(1)}, {key(2)}}
	for i, step := range steps {
		if err := a.Set(step...); err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]*Keyring{{a, b}, {b, a}} {
			if _, err := pair[1].OpenPacket(nil, ad, pair[0].SealPacket(nil, ad, []byte("x"))); err != nil {
				t.Fatalf("step %d: %v", i+1, err)
			}
		}
		if err := b.Set(step...); err != nil {
			t.Fatal(err)
		}
		if i < 2 && (a.Lookup(k1.ID()) != k1 || k1.Removed()) {
			t.Fatalf("step %d: the kept key was replaced", i+1)
		}
	}
	if !k1.Removed() || a.Lookup(k1.ID()) != nil {
		t.Fatal("the removed key still works")
	}
	if _, err := a.OpenPacket(nil, ad, sealed); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("packet of the removed key: %v", err)
	}
}

func TestDerive(t *testing.T) {
	r, _ := New(key(7))
	k := r.Primary()
	n1, n2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	s1, err := k.Derive(n1, n2)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := k.Derive(n1, n2)
	s3, _ := k.Derive(n2, n1)
	if s1.Proof != s2.Proof || s1.Proof == s3.Proof {
		t.Fatal("proof not a function of both nonces in order")
	}
	nonce := make([]byte, 12)
	ct := s1.Client.Seal(nil, nonce, []byte("m"), nil)
	if _, err := s2.Client.Open(nil, nonce, ct, nil); err != nil {
		t.Fatal("same nonces, different keys")
	}
	if _, err := s2.Server.Open(nil, nonce, ct, nil); err == nil {
		t.Fatal("client and server keys are the same")
	}
	if _, err := s3.Client.Open(nil, nonce, ct, nil); err == nil {
		t.Fatal("other nonces, same keys")
	}
}
