package wire

import (
	"io"
	"testing"
)

func benchEnvelope() Envelope {
	return Envelope{From: testID(1), Seq: 1 << 20, Mode: Ack, Payload: pattern(1024)}
}

func BenchmarkAppendMessage1KiB(b *testing.B) {
	e := benchEnvelope()
	buf := AppendMessage(nil, FirstApp, e)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], FirstApp, e)
	}
}

func BenchmarkParseEnvelope1KiB(b *testing.B) {
	frame := AppendMessage(nil, FirstApp, benchEnvelope())
	body := frame[HeaderLen:]
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEnvelope(body); err != nil {
			b.Fatal(err)
		}
	}
}

// loopReader repeats its data for ever.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

var _ io.Reader = (*loopReader)(nil)

func BenchmarkReaderNext1KiB(b *testing.B) {
	frame := AppendMessage(nil, FirstApp, benchEnvelope())
	r := NewReader(&loopReader{data: frame}, DefaultMaxFrame)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.Next(nil)
		if err != nil || len(f.Body) != len(frame)-HeaderLen {
			b.Fatal(len(f.Body), err)
		}
	}
}
