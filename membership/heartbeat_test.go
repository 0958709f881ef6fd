package membership

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func sampleHeartbeat() Heartbeat {
	var id ID
	for i := range id {
		id[i] = byte(i + 1)
	}
	return Heartbeat{Command: CommandAlive, Seq: 42, Member: Member{
		ID:      id,
		Name:    "node1",
		Domain:  "default",
		Addr:    netip.MustParseAddrPort("198.51.100.10:4000"),
		Started: time.Date(2026, 11, 22, 12, 0, 0, 123456789, time.UTC),
	}}
}

func TestHeartbeatRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Heartbeat)
	}{
		{"alive", func(*Heartbeat) {}},
		{"leaving", func(h *Heartbeat) { h.Command = CommandLeaving }},
		{"ipv6 receiver", func(h *Heartbeat) { h.Member.Addr = netip.MustParseAddrPort("[2001:db8::1]:4001") }},
		{"empty domain", func(h *Heartbeat) { h.Member.Domain = "" }},
		{"longest names", func(h *Heartbeat) {
			h.Member.Name = repeat('n', MaxNameLen)
			h.Member.Domain = repeat('d', MaxNameLen)
			h.Member.Zone = repeat('z', MaxNameLen)
		}},
		{"zone", func(h *Heartbeat) { h.Member.Zone = "eu-west-1a" }},
		{"utf-8 name", func(h *Heartbeat) { h.Member.Name = "nœud-été" }},
		{"max seq", func(h *Heartbeat) { h.Seq = ^uint64(0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := sampleHeartbeat()
			tc.edit(&h)
			b, err := h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxHeartbeatLen {
				t.Fatalf("encoded %d bytes, more than MaxHeartbeatLen %d", len(b), MaxHeartbeatLen)
			}
			got, err := DecodeHeartbeat(b)
			if err != nil {
				t.Fatal(err)
			}
			if !equalHeartbeat(got, h) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, h)
			}
		})
	}
}

func repeat(c byte, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

func equalHeartbeat(a, b Heartbeat) bool {
	return a.Command == b.Command && a.Seq == b.Seq && a.Member.ID == b.Member.ID &&
		a.Member.Name == b.Member.Name && a.Member.Domain == b.Member.Domain &&
		a.Member.Addr == b.Member.Addr && a.Member.Zone == b.Member.Zone && a.Member.Started.Equal(b.Member.Started)
}

func TestDecodeHeartbeatRejects(t *testing.T) {
	good, err := sampleHeartbeat().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	nameOff := headerLen + 2 + 1 + 4 // the name length byte of the sample (IPv4)
	edit := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"magic only", []byte("FLKB"), ErrShort},
		{"truncated by one", good[:len(good)-1], ErrShort},
		{"header only", good[:headerLen], ErrShort},
		{"empty zone", append(append([]byte(nil), good...), 0), ErrMalformed},
		{"zone cut short", append(append([]byte(nil), good...), 3, 'a'), ErrShort},
		{"trailing byte after the zone", append(append([]byte(nil), good...), 1, 'a', 0), ErrLong},
		{"zone with a control character", append(append([]byte(nil), good...), 1, '\n'), ErrMalformed},
		{"oversized", make([]byte, MaxHeartbeatLen+1), ErrForeign},
		{"oversized with magic", edit(func(b []byte) []byte { return append(b, make([]byte, MaxHeartbeatLen)...) }), ErrLong},
		{"tomcat heartbeat", append([]byte("TRIBES-B\x01\x00"), make([]byte, 67)...), ErrForeign},
		{"wrong magic", edit(func(b []byte) []byte { b[0] = 'X'; return b }), ErrForeign},
		{"future version", edit(func(b []byte) []byte { b[4] = 2; return b }), ErrVersion},
		{"unknown command", edit(func(b []byte) []byte { b[5] = 9; return b }), ErrMalformed},
		{"zero command", edit(func(b []byte) []byte { b[5] = 0; return b }), ErrMalformed},
		{"auth flag", edit(func(b []byte) []byte { b[6] = 1; return b }), ErrMalformed},
		{"reserved byte", edit(func(b []byte) []byte { b[7] = 1; return b }), ErrMalformed},
		{"zero id", edit(func(b []byte) []byte { clear(b[8:24]); return b }), ErrMalformed},
		{"port zero", edit(func(b []byte) []byte { b[40], b[41] = 0, 0; return b }), ErrMalformed},
		{"ip length 5", edit(func(b []byte) []byte { b[42] = 5; return b }), ErrMalformed},
		{"ip length 255", edit(func(b []byte) []byte { b[42] = 255; return b }), ErrShort},
		{"unspecified ip", edit(func(b []byte) []byte { clear(b[43:47]); return b }), ErrMalformed},
		{"ipv4-mapped ipv6", edit(func(b []byte) []byte {
			ip := netip.MustParseAddr("::ffff:198.51.100.10").As16()
			return append(append(append(b[:42], 16), ip[:]...), b[47:]...)
		}), ErrMalformed},
		{"multicast ip", edit(func(b []byte) []byte { b[43] = 228; return b }), ErrMalformed},
		{"empty name", edit(func(b []byte) []byte {
			return append(b[:nameOff], 0, 1, 'd')
		}), ErrMalformed},
		{"name runs past the end", edit(func(b []byte) []byte { b[nameOff] = 200; return b }), ErrShort},
		{"name not utf-8", edit(func(b []byte) []byte { b[nameOff+1] = 0xff; return b }), ErrMalformed},
		{"name with newline", edit(func(b []byte) []byte { b[nameOff+1] = '\n'; return b }), ErrMalformed},
		{"domain length past the end", edit(func(b []byte) []byte { b[nameOff+1+5] = 9; return b }), ErrShort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeHeartbeat(tc.pkt)
			if !errors.Is(err, tc.want) {
				t.Errorf("DecodeHeartbeat = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMarshalRefusesWhatCannotBeDecoded(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Heartbeat)
	}{
		{"no name", func(h *Heartbeat) { h.Member.Name = "" }},
		{"long name", func(h *Heartbeat) { h.Member.Name = repeat('x', MaxNameLen+1) }},
		{"long domain", func(h *Heartbeat) { h.Member.Domain = repeat('x', MaxNameLen+1) }},
		{"no address", func(h *Heartbeat) { h.Member.Addr = netip.AddrPort{} }},
		{"unspecified address", func(h *Heartbeat) { h.Member.Addr = netip.MustParseAddrPort("0.0.0.0:4000") }},
		{"bad command", func(h *Heartbeat) { h.Command = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := sampleHeartbeat()
			tc.edit(&h)
			if _, err := h.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Errorf("MarshalBinary = %v, want ErrMalformed", err)
			}
		})
	}
}

// FuzzDecodeHeartbeat: any packet decodes or fails cleanly, and whatever
// decodes encodes back to the same bytes.
func FuzzDecodeHeartbeat(f *testing.F) {
	for _, h := range []Heartbeat{sampleHeartbeat()} {
		b, err := h.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		h, err := DecodeHeartbeat(pkt)
		if err != nil {
			return
		}
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", h, err)
		}
		if string(b) != string(pkt) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", pkt, b)
		}
	})
}
