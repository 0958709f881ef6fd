package manager

import (
	"encoding/binary"
	"fmt"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// parseDelta reads a delta straight from its bytes: what msgpack's
// reflection reads for the struct's tags (any field order, any integer
// encoding, nil for an absent map or list, unknown fields refused), without
// a Decoder, an io.Reader or a separate well-formedness pass. Every length is checked against the bytes left, nothing recurses
// (a delta is two levels deep: its map, then a map or list of strings), and
// counts only bound what is allocated once the bytes are there, so a
// hostile body can claim nothing it does not hold; the body must be
// exactly one value, as wire.CheckMsgpack asks of the other messages.
// Unlike the Decoder it refuses an extension type where a map is due:
// neither codec writes one.
//
// known are strings the delta's node names are likely to be (the sender's,
// this node's): one that matches is used as it is, not allocated again.
func parseDelta(p []byte, d *delta, known knownNames) error {
	c := cursor{b: p, names: known}
	*d = delta{}
	n := c.mapLen()
	for i := 0; i < n && c.err == nil; i++ {
		kn := c.bytesLen()
		if c.err == nil && (kn < 0 || kn > 2) {
			return fmt.Errorf("msgpack: delta: a field name of %d bytes", kn)
		}
		switch key := c.take(kn); string(key) {
		case "i":
			d.ID = c.str()
		case "r":
			d.Old = c.str()
		case "b":
			d.Base = c.uint()
		case "bo":
			d.BaseOrigin = c.name()
		case "v":
			d.Version = c.uint()
		case "o":
			d.Origin = c.name()
		case "c":
			d.Created = c.int()
		case "a":
			d.Access = c.int()
		case "m":
			d.MaxInactive = c.int()
		case "s":
			d.Set = c.attrs()
		case "d":
			d.Del = c.keys()
		case "f":
			d.Full = c.bool()
		case "y":
			d.Sync = c.bool()
		default:
			c.fail("unknown field %q", key)
		}
	}
	if c.err == nil && len(c.b) > 0 {
		c.fail("%d bytes after the value", len(c.b))
	}
	return c.err
}

// cursor reads msgpack values from the front of b; the first error sticks
// and every later read returns zero values.
type cursor struct {
	b     []byte
	err   error
	names knownNames
}

// knownNames are strings a parse may return without a copy; "" for none.
// An array, not a slice: nothing to allocate per parse.
type knownNames [2]string

func (c *cursor) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("msgpack: delta: "+format, args...)
	}
}

// take returns the next n bytes, which alias b.
func (c *cursor) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if n < 0 || n > len(c.b) {
		c.fail("%d bytes claimed, %d left", n, len(c.b))
		return nil
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) code() byte {
	if v := c.take(1); v != nil {
		return v[0]
	}
	return 0
}

// be reads an n-byte big-endian number.
func (c *cursor) be(n int) uint64 {
	v := c.take(n)
	if v == nil {
		return 0
	}
	switch n {
	case 1:
		return uint64(v[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(v))
	case 4:
		return uint64(binary.BigEndian.Uint32(v))
	}
	return binary.BigEndian.Uint64(v)
}

// mapLen reads a map header: -1 for nil.
func (c *cursor) mapLen() int {
	return c.containerLen("a map", msgpcode.FixedMapLow, msgpcode.FixedMapHigh, msgpcode.Map16, msgpcode.Map32)
}

// arrayLen reads an array header: -1 for nil.
func (c *cursor) arrayLen() int {
	return c.containerLen("a list", msgpcode.FixedArrayLow, msgpcode.FixedArrayHigh, msgpcode.Array16, msgpcode.Array32)
}

// containerLen reads the header of a container of kind what, whose fixed
// codes run from low to high (the count in the low four bits) and whose
// longer forms are c16 and c32: -1 for nil.
func (c *cursor) containerLen(what string, low, high, c16, c32 byte) int {
	switch b := c.code(); {
	case c.err != nil:
	case b == msgpcode.Nil:
		return -1
	case b >= low && b <= high:
		return int(b & 0x0f)
	case b == c16:
		return int(c.be(2))
	case b == c32:
		return int(c.be(4))
	case msgpcode.IsExt(b):
		c.fail("an extension type (code %#x) where %s is due", b, what)
	default:
		c.fail("code %#x where %s is due", b, what)
	}
	return 0
}

// bytesLen reads a string or binary header, as the Decoder takes either
// for either: -1 for nil.
func (c *cursor) bytesLen() int {
	switch b := c.code(); {
	case c.err != nil:
	case b == msgpcode.Nil:
		return -1
	case msgpcode.IsFixedString(b):
		return int(b & msgpcode.FixedStrMask)
	case b == msgpcode.Str8 || b == msgpcode.Bin8:
		return int(c.be(1))
	case b == msgpcode.Str16 || b == msgpcode.Bin16:
		return int(c.be(2))
	case b == msgpcode.Str32 || b == msgpcode.Bin32:
		return int(c.be(4))
	default:
		c.fail("code %#x where a string is due", b)
	}
	return 0
}

func (c *cursor) str() string {
	n := c.bytesLen()
	if n <= 0 {
		return ""
	}
	return string(c.take(n))
}

// name reads a string that is likely one of c.names: that one is
// returned, with no copy of the bytes made.
func (c *cursor) name() string {
	n := c.bytesLen()
	if n <= 0 {
		return ""
	}
	b := c.take(n)
	for _, s := range c.names {
		if s != "" && string(b) == s {
			return s
		}
	}
	return string(b)
}

// bin returns a copy: the frame's bytes are not the session's.
func (c *cursor) bin() []byte {
	n := c.bytesLen()
	if n < 0 || c.err != nil {
		return nil
	}
	v := c.take(n)
	if v == nil {
		return nil
	}
	return append(make([]byte, 0, n), v...)
}

// number reads any integer encoding (nil as 0) as its 64 bits, two's
// complement for the signed ones, as the Decoder does for either type.
func (c *cursor) number() uint64 {
	switch b := c.code(); {
	case c.err != nil:
	case b == msgpcode.Nil:
	case msgpcode.IsFixedNum(b):
		return uint64(int64(int8(b)))
	case b == msgpcode.Uint8:
		return c.be(1)
	case b == msgpcode.Uint16:
		return c.be(2)
	case b == msgpcode.Uint32:
		return c.be(4)
	case b == msgpcode.Uint64 || b == msgpcode.Int64:
		return c.be(8)
	case b == msgpcode.Int8:
		return uint64(int64(int8(c.be(1))))
	case b == msgpcode.Int16:
		return uint64(int64(int16(c.be(2))))
	case b == msgpcode.Int32:
		return uint64(int64(int32(c.be(4))))
	default:
		c.fail("code %#x where an integer is due", b)
	}
	return 0
}

func (c *cursor) uint() uint64 { return c.number() }
func (c *cursor) int() int64   { return int64(c.number()) }

func (c *cursor) bool() bool {
	switch b := c.code(); {
	case c.err != nil, b == msgpcode.Nil, b == msgpcode.False:
	case b == msgpcode.True:
		return true
	default:
		c.fail("code %#x where a bool is due", b)
	}
	return false
}

// attrs reads a map of attribute values: nil for nil. Each entry takes at
// least two bytes, so the count the map claims is bounded by what is left
// before anything is allocated for it.
func (c *cursor) attrs() map[string][]byte {
	n := c.mapLen()
	if n < 0 || c.err != nil {
		return nil
	}
	if n > len(c.b)/2 {
		c.fail("a map of %d claimed in %d bytes", n, len(c.b))
		return nil
	}
	m := make(map[string][]byte, n)
	for range n {
		k := c.str()
		v := c.bin()
		if c.err != nil {
			return nil
		}
		m[k] = v
	}
	return m
}

// keys reads a list of attribute names: nil for nil.
func (c *cursor) keys() []string {
	n := c.arrayLen()
	if n < 0 || c.err != nil {
		return nil
	}
	if n > len(c.b) {
		c.fail("a list of %d claimed in %d bytes", n, len(c.b))
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		k := c.str()
		if c.err != nil {
			return nil
		}
		out = append(out, k)
	}
	return out
}
