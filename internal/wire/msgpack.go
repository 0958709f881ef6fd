package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The envelope and the control bodies are small msgpack arrays. They are
// written and read by hand, not through reflection, because they sit on the
// path of every replicated message: encoding is an append with no
// allocation, decoding a bounds-checked walk over the frame. Any msgpack
// implementation can read them; the tests check that against
// github.com/vmihailenco/msgpack.

func appendArray(b []byte, n int) []byte {
	if n < 16 {
		return append(b, 0x90|byte(n))
	}
	return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 128:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		return appendUint(b, uint64(v))
	}
	if v >= -32 {
		return append(b, byte(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

// Encoded sizes, for checking a frame's length before it is built.
func uintSize(v uint64) int {
	switch {
	case v < 128:
		return 1
	case v <= math.MaxUint8:
		return 2
	case v <= math.MaxUint16:
		return 3
	case v <= math.MaxUint32:
		return 5
	}
	return 9
}

func binSize(n int) int {
	switch {
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

func strSize(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

func appendBin(b []byte, p []byte) []byte {
	switch n := len(p); {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, p...)
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// decoder walks a msgpack body. The first error sticks and every later read
// returns a zero value, so a parser reads like the layout it expects and
// checks err once.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: offset %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.fail("need %d bytes, %d left", n, len(d.b)-d.off)
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

// isStr reports whether the next value is a string, without reading it.
func (d *decoder) isStr() bool {
	if d.err != nil || d.off >= len(d.b) {
		return false
	}
	c := d.b[d.off]
	return c&0xe0 == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb
}

func (d *decoder) be(n int) uint64 {
	v := d.take(n)
	var x uint64
	for _, c := range v {
		x = x<<8 | uint64(c)
	}
	return x
}

func (d *decoder) array() int {
	n := d.arrayHeader()
	if n < 16 {
		return int(n) // too few to need the check: each element is read in turn
	}
	return d.count(n)
}

// arrayHeader reads an array header's element count unchecked; array
// checks it against the bytes left, which a parser of a prefix cannot.
func (d *decoder) arrayHeader() uint64 {
	switch c := d.byte(); {
	case d.err != nil:
	case c&0xf0 == 0x90:
		return uint64(c & 0x0f)
	case c == 0xdc:
		return d.be(2)
	case c == 0xdd:
		return d.be(4)
	default:
		d.fail("want an array, found type byte %#x", c)
	}
	return 0
}

// count checks the element count of an array or map (twice the pairs):
// each element takes at least one byte, so a count beyond the bytes left is
// malformed, and one within them fits an int on every platform.
func (d *decoder) count(n uint64) int {
	if left := uint64(len(d.b) - d.off); d.err == nil && n > left {
		d.fail("%d elements announced, %d bytes left", n, left)
		return 0
	}
	return int(n)
}

// arrayOf reads an array header and requires at least n elements; extra
// trailing elements are skipped by the caller (skipRest), so a later version
// may append fields.
func (d *decoder) arrayOf(n int, what string) int {
	got := d.array()
	if d.err == nil && got < n {
		d.fail("%s: array of %d, need %d", what, got, n)
	}
	return got
}

func (d *decoder) uint() uint64 {
	switch c := d.byte(); {
	case d.err != nil:
	case c < 0x80:
		return uint64(c)
	case c == 0xcc:
		return d.be(1)
	case c == 0xcd:
		return d.be(2)
	case c == 0xce:
		return d.be(4)
	case c == 0xcf:
		return d.be(8)
	case c >= 0xd0 && c <= 0xd3:
		// A signed format, as encoders that follow a Go int write even
		// non-negative values; int reads these without calling uint.
		d.off--
		v := d.int()
		if v < 0 {
			d.fail("want an unsigned integer, found %d", v)
			return 0
		}
		return uint64(v)
	default:
		d.fail("want an unsigned integer, found type byte %#x", c)
	}
	return 0
}

func (d *decoder) int() int64 {
	switch c := d.b; {
	case d.err != nil || d.off >= len(c):
	case c[d.off] >= 0xe0:
		d.off++
		return int64(int8(c[d.off-1]))
	case c[d.off] == 0xd0:
		d.off++
		return int64(int8(d.be(1)))
	case c[d.off] == 0xd1:
		d.off++
		return int64(int16(d.be(2)))
	case c[d.off] == 0xd2:
		d.off++
		return int64(int32(d.be(4)))
	case c[d.off] == 0xd3:
		d.off++
		return int64(d.be(8))
	}
	u := d.uint()
	if u > math.MaxInt64 {
		d.fail("integer %d overflows int64", u)
	}
	return int64(u)
}

func (d *decoder) bin() []byte {
	var n uint64
	switch c := d.byte(); {
	case d.err != nil:
		return nil
	case c == 0xc4:
		n = d.be(1)
	case c == 0xc5:
		n = d.be(2)
	case c == 0xc6:
		n = d.be(4)
	default:
		d.fail("want binary, found type byte %#x", c)
		return nil
	}
	return d.take(int(n))
}

func (d *decoder) str() string {
	var n uint64
	switch c := d.byte(); {
	case d.err != nil:
		return ""
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xd9:
		n = d.be(1)
	case c == 0xda:
		n = d.be(2)
	case c == 0xdb:
		n = d.be(4)
	default:
		d.fail("want a string, found type byte %#x", c)
		return ""
	}
	return string(d.take(int(n)))
}

// skip steps over one value of any type, so newer peers can add fields.
// depth bounds nesting: a hostile body cannot recurse the stack away.
func (d *decoder) skip(depth int) {
	if depth > 16 {
		d.fail("nesting deeper than 16")
		return
	}
	if n, container := d.header(); container {
		d.skipN(n, depth)
	}
}

func (d *decoder) skipN(n, depth int) {
	for i := 0; i < n && d.err == nil; i++ {
		if d.off >= len(d.b) {
			d.fail("array or map runs past the end")
			return
		}
		d.skip(depth + 1)
	}
}

// end skips the elements of an array beyond the n a parser knows, then
// requires the body to be used up.
func (d *decoder) end(have, known int) {
	d.skipN(have-known, 0)
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
}
