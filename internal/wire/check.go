package wire

// CheckMsgpack reports whether b is exactly one well-formed msgpack value
// nested at most maxDepth containers deep, every declared length and count
// within the bytes that remain. A decoder that allocates by declared counts
// (msgpack.Unmarshal into maps and slices) or recurses into nesting runs
// only on bodies that pass: eight bytes cannot announce a map of four
// billion entries, nor a megabyte of brackets exhaust the stack.
//
// The walk is iterative (a stack of counts, one per open container, at
// most maxDepth of them) and allocates only that stack.
func CheckMsgpack(b []byte, maxDepth int) error {
	d := &decoder{b: b}
	var open [64]int // counts left per open container; maxDepth is capped to it
	maxDepth = min(maxDepth, len(open))
	depth := 0
	left := 1 // values left at the current level: the top level holds one
	for d.err == nil {
		if left == 0 {
			if depth == 0 {
				break
			}
			depth--
			left = open[depth]
			continue
		}
		left--
		n, container := d.header()
		if !container || d.err != nil {
			continue
		}
		if depth == maxDepth {
			d.fail("nesting deeper than %d", maxDepth)
			break
		}
		if n > 0 {
			open[depth] = left
			depth++
			left = n
		}
	}
	if d.err == nil && d.off != len(b) {
		d.fail("%d trailing bytes", len(b)-d.off)
	}
	return d.err
}

// header reads one value's header and steps over a scalar's bytes; for an
// array or map it returns the number of values inside (twice the pairs),
// checked against the bytes left.
func (d *decoder) header() (n int, container bool) {
	c := d.byte()
	if d.err != nil {
		return 0, false
	}
	switch {
	case c < 0x80 || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
	case c&0xf0 == 0x80:
		return d.count(2 * uint64(c&0x0f)), true
	case c&0xf0 == 0x90:
		return d.count(uint64(c & 0x0f)), true
	case c&0xe0 == 0xa0:
		d.take(int(c & 0x1f))
	case c == 0xc4 || c == 0xd9:
		d.take(int(d.be(1)))
	case c == 0xc5 || c == 0xda:
		d.take(int(d.be(2)))
	case c == 0xc6 || c == 0xdb:
		d.take(d.count(d.be(4)))
	case c == 0xcc || c == 0xd0:
		d.take(1)
	case c == 0xcd || c == 0xd1:
		d.take(2)
	case c == 0xce || c == 0xd2 || c == 0xca:
		d.take(4)
	case c == 0xcf || c == 0xd3 || c == 0xcb:
		d.take(8)
	case c == 0xdc:
		return d.count(d.be(2)), true
	case c == 0xdd:
		return d.count(d.be(4)), true
	case c == 0xde:
		return d.count(2 * d.be(2)), true
	case c == 0xdf:
		return d.count(2 * d.be(4)), true
	case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: type and data
		d.take(1 + 1<<(c-0xd4))
	case c == 0xc7: // ext 8, 16, 32: length, type and data
		d.take(int(d.be(1)) + 1)
	case c == 0xc8:
		d.take(int(d.be(2)) + 1)
	case c == 0xc9:
		d.take(d.count(d.be(4)) + 1)
	default: // 0xc1, never used
		d.fail("unsupported type byte %#x", c)
	}
	return 0, false
}
