// Package sessionlog is the on-disk store a flock node keeps the sessions it
// owns in, so that a node restarted with the same name (and data directory)
// can recover them, like Resin's persistent session store.
//
// # Why an append-only log
//
// Sessions are small, written often and read back only at start. An
// append-only log with periodic compaction gives sequential writes, no page
// management, a trivially crash-safe format (a torn tail is detected by its
// checksum and cut) and no dependency. bbolt would add a dependency and
// random-write B+tree updates for a workload that never reads at run time:
// the live state is held in memory, and the file is only replayed by Open.
//
// # On-disk format
//
// A directory holds a LOCK file (flock(2)-locked while a Log is open, so two
// nodes cannot share a directory) and segment files named by a zero-padded
// sequence number, 000001.log, 000002.log, ..., replayed in that order. All
// integers are little-endian. Each segment starts with an 8-byte header:
//
//	"FLSL" | format version (1) | kind (0 = log, 1 = snapshot) | 0 | 0
//
// followed by records, each framed as
//
//	length uint32 | CRC-32C (Castagnoli) of body uint32 | body (length bytes)
//
// and each body, a hand-written layout (simpler and cheaper than msgpack
// for four fixed fields), is
//
//	flags uint8 (bit 0: tombstone; other bits must be 0) | version uint64 |
//	uvarint len(ID) | ID | Data (the rest of the body; empty in a tombstone)
//
// Replay keeps, per ID, the record with the highest Version (on a tie the
// later one); a tombstone removes the session. Appends go to a buffer that
// Flush writes and fsyncs; a new log segment is started after a Flush that
// leaves the current one over 64 MiB. Compact writes the live records to a
// snapshot segment (a temporary file, fsynced, renamed into place, directory
// fsynced) numbered after every existing one, then deletes the older
// segments; later appends go to the end of the snapshot. A snapshot holds the
// whole state as of its creation, so Open ignores and deletes every segment
// numbered below the newest snapshot, and deletes leftover *.log.tmp files: a
// crash at any point of a compaction leaves either the old segments (plus a
// temporary file) or a complete snapshot (perhaps plus old segments), and
// either way Open recovers the same state. Tombstones are not copied into a
// snapshot: every record they shadow is in the segments it replaces.
//
// # Damage
//
// Only the last segment is ever being written, so only it can end in a torn
// write: Open cuts the last segment at its first record that is short, fails
// its checksum, is longer than Options.MaxRecord or does not decode, and
// reports the bytes cut in Stats.TruncatedBytes (a torn header of the last
// segment is rewritten). Anything wrong in an older segment was on disk
// after an fsync and is an error naming the file and offset; so is a header
// with another magic or format version, which Open never truncates.
package sessionlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Record is one session's state as the owner last wrote it.
type Record struct {
	ID      string
	Version uint64
	Deleted bool   // a tombstone: the session ended (expired/invalidated); Data is empty
	Data    []byte // the encoded session, opaque to the log
}

// Options tune a Log; zero fields take their defaults.
type Options struct {
	// SyncInterval: appends are buffered and fsynced at most this often by
	// Flush (the caller's writer goroutine calls Flush); 0 = fsync every
	// Flush. With an interval, a Flush that comes too soon after the last
	// fsync only writes to the OS, and a later Flush (or Close) fsyncs, so
	// the writer should call Flush periodically even when idle.
	SyncInterval time.Duration
	// CompactRatio: Compact rewrites the log when the bytes on disk exceed
	// this many times the live bytes (default 2; values below 1 act as 1).
	CompactRatio float64
	// MaxRecord: a record whose encoded body is larger than this is refused
	// on write and treated as corruption on read (default 64 MiB).
	MaxRecord int

	segmentSize int64 // roll to a new segment past this size; tests shrink it
}

const (
	defaultCompactRatio = 2
	defaultMaxRecord    = 64 << 20
	defaultSegmentSize  = 64 << 20
	writeThrough        = 4 << 20 // Put writes (without fsync) a buffer this big
)

// DefaultOptions returns the defaults: fsync on every Flush, compaction when
// the disk holds more than twice the live bytes, records up to 64 MiB.
func DefaultOptions() Options {
	return Options{CompactRatio: defaultCompactRatio, MaxRecord: defaultMaxRecord}
}

func (o Options) withDefaults() Options {
	if o.SyncInterval < 0 {
		o.SyncInterval = 0
	}
	if !(o.CompactRatio > 0) { // also NaN
		o.CompactRatio = defaultCompactRatio
	}
	o.CompactRatio = max(o.CompactRatio, 1)
	if o.MaxRecord <= 0 {
		o.MaxRecord = defaultMaxRecord
	}
	if uint64(o.MaxRecord) > math.MaxUint32 {
		o.MaxRecord = math.MaxUint32
	}
	if o.segmentSize <= 0 {
		o.segmentSize = defaultSegmentSize
	}
	return o
}

// Stats describe a Log.
type Stats struct {
	Segments       int    // segment files
	DiskBytes      int64  // bytes in the segment files (not counting the unflushed buffer)
	LiveBytes      int64  // bytes a compacted log would take: one header and the live records
	Records        int    // live sessions
	TruncatedBytes int64  // bytes of damaged tail cut from the last segment by Open
	Appends        uint64 // records appended since Open (stale versions are not appended)
	Flushes        uint64 // fsyncs of appended records since Open
}

// ErrClosed is returned by a Log's writing methods after Close.
var ErrClosed = errors.New("sessionlog: log is closed")

// Log is an open session log. It is safe for concurrent use.
type Log struct {
	mu    sync.Mutex
	dir   string
	opts  Options
	lock  *os.File
	f     *os.File // the last segment, opened for appending
	segs  []segment
	buf   []byte // appended records not yet written to f
	dirty bool   // f has writes not yet fsynced
	last  time.Time
	err   error // a failed write or fsync: the file's state is unknown
	shut  bool

	live  map[string]entry
	tombs map[string]uint64 // versions of ended sessions, until the next Compact
	liveB int64             // sum of live frame sizes

	truncated        int64
	appends, flushes uint64
}

type entry struct {
	rec  Record
	size int64 // frame size on disk
}

type segment struct {
	seq  uint64
	size int64
}

// Segment header and record framing.
const (
	headerSize  = 8
	frameHeader = 8         // length + CRC
	minBody     = 1 + 8 + 1 // flags, version, len(ID) (an ID is never empty)
	kindLog     = 0
	kindSnap    = 1
	flagDeleted = 1
)

var (
	magic      = [4]byte{'F', 'L', 'S', 'L'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

func header(kind byte) []byte {
	return []byte{magic[0], magic[1], magic[2], magic[3], 1, kind, 0, 0}
}

// checkHeader returns a segment's kind, or an error if h is not a header
// this package wrote.
func checkHeader(h []byte) (byte, error) {
	switch {
	case len(h) < headerSize:
		return 0, errors.New("short header")
	case !bytes.Equal(h[:4], magic[:]):
		return 0, fmt.Errorf("not a session log segment (magic %q)", h[:4])
	case h[4] != 1:
		return 0, fmt.Errorf("unsupported format version %d", h[4])
	case h[5] != kindLog && h[5] != kindSnap || h[6] != 0 || h[7] != 0:
		return 0, fmt.Errorf("bad header % x", h)
	}
	return h[5], nil
}

// tornHeader reports whether h, shorter than a header or all zeros, is what
// a crash while creating a log segment can leave.
func tornHeader(h []byte) bool {
	if len(h) < headerSize {
		return bytes.HasPrefix(header(kindLog), h) || bytes.HasPrefix(header(kindSnap), h) ||
			!slices.ContainsFunc(h, func(b byte) bool { return b != 0 })
	}
	return !slices.ContainsFunc(h[:headerSize], func(b byte) bool { return b != 0 })
}

func bodySize(r *Record) int {
	return 1 + 8 + uvarintLen(uint64(len(r.ID))) + len(r.ID) + len(r.Data)
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// appendFrame appends r's frame to dst.
func appendFrame(dst []byte, r *Record) []byte {
	n := bodySize(r)
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, 0, 0, 0, 0) // CRC, filled in below
	var flags byte
	if r.Deleted {
		flags |= flagDeleted
	}
	dst = append(dst, flags)
	dst = binary.LittleEndian.AppendUint64(dst, r.Version)
	dst = binary.AppendUvarint(dst, uint64(len(r.ID)))
	dst = append(dst, r.ID...)
	dst = append(dst, r.Data...)
	body := dst[start+frameHeader:]
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
	return dst
}

// decodeBody parses a body whose checksum matched. Data is a copy.
func decodeBody(b []byte) (Record, error) {
	if len(b) < minBody {
		return Record{}, errors.New("body too short")
	}
	flags := b[0]
	if flags&^flagDeleted != 0 {
		return Record{}, fmt.Errorf("unknown flags %#x", flags)
	}
	r := Record{Version: binary.LittleEndian.Uint64(b[1:9]), Deleted: flags&flagDeleted != 0}
	n, k := binary.Uvarint(b[9:])
	rest := b[9:]
	if k <= 0 || n == 0 || n > uint64(len(rest)-k) {
		return Record{}, errors.New("bad ID length")
	}
	rest = rest[k:]
	r.ID = string(rest[:n])
	if data := rest[n:]; len(data) > 0 {
		if r.Deleted {
			return Record{}, errors.New("tombstone with data")
		}
		r.Data = bytes.Clone(data)
	}
	return r, nil
}

func segName(seq uint64) string { return fmt.Sprintf("%06d.log", seq) }

// parseSegName returns the sequence number of a segment file name.
func parseSegName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, ".log")
	if !ok || len(digits) < 6 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil && seq > 0
}

// Open opens (creating it if needed, mode 0700) the log in dir, locks the
// directory against other processes and replays the segments into memory.
// A damaged tail of the last segment is cut (see Stats.TruncatedBytes);
// damage anywhere else is an error naming the file and offset.
func Open(dir string, opts Options) (*Log, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sessionlog: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sessionlog: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("sessionlog: %s is locked by another process (is another node running with this data directory?)", dir)
		}
		return nil, fmt.Errorf("sessionlog: locking %s: %w", dir, err)
	}
	// The pid is only for whoever looks at the directory.
	if lock.Truncate(0) == nil {
		lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	l := &Log{dir: dir, opts: opts, lock: lock, live: map[string]entry{}, tombs: map[string]uint64{}}
	if err := l.load(); err != nil {
		if l.f != nil {
			l.f.Close()
		}
		lock.Close() // closing the last descriptor releases the flock
		return nil, err
	}
	return l, nil
}

func (l *Log) path(seq uint64) string { return filepath.Join(l.dir, segName(seq)) }

// load replays the directory and leaves l.f open on the last segment.
func (l *Log) load() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	var seqs []uint64
	removed := false
	for _, e := range ents {
		name := e.Name()
		if base, ok := strings.CutSuffix(name, ".tmp"); ok {
			if _, ok := parseSegName(base); ok { // an unfinished compaction
				if err := os.Remove(filepath.Join(l.dir, name)); err != nil {
					return fmt.Errorf("sessionlog: %w", err)
				}
				removed = true
			}
			continue
		}
		if seq, ok := parseSegName(name); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)

	// Everything below the newest snapshot is superseded by it.
	for i := len(seqs) - 1; i > 0; i-- {
		if kind, err := readKind(l.path(seqs[i])); err == nil && kind == kindSnap {
			for _, seq := range seqs[:i] {
				if err := os.Remove(l.path(seq)); err != nil {
					return fmt.Errorf("sessionlog: removing superseded segment: %w", err)
				}
			}
			seqs, removed = seqs[i:], true
			break
		}
	}
	if removed {
		if err := syncDir(l.dir); err != nil {
			return err
		}
	}
	if len(seqs) == 0 {
		return l.newSegment(1)
	}
	for i, seq := range seqs {
		last := i == len(seqs)-1
		name := l.path(seq)
		res, err := readSegment(name, l.opts.MaxRecord, func(r Record, n int64) { l.apply(r, n) })
		if err != nil {
			return fmt.Errorf("sessionlog: %s: %w", name, err)
		}
		if res.stop != nil && !last {
			return fmt.Errorf("sessionlog: %s: corrupt at offset %d: %v", name, res.end, res.stop)
		}
		size := res.size
		if res.stop != nil {
			if err := l.cut(name, res.end, res.tornHeader); err != nil {
				return err
			}
			l.truncated = res.size - res.end
			size = max(res.end, headerSize)
		}
		l.segs = append(l.segs, segment{seq: seq, size: size})
	}
	f, err := os.OpenFile(l.path(seqs[len(seqs)-1]), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	l.f = f
	return nil
}

// cut truncates the last segment to end, rewriting its header if torn.
func (l *Log) cut(name string, end int64, tornHeader bool) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	err = f.Truncate(end)
	if err == nil && tornHeader {
		_, err = f.WriteAt(header(kindLog), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sessionlog: truncating damaged tail: %w", err)
	}
	return nil
}

func readKind(name string) (byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := make([]byte, headerSize)
	if _, err := io.ReadFull(f, h); err != nil {
		return 0, err
	}
	return checkHeader(h)
}

type scan struct {
	size       int64 // the file's size
	end        int64 // offset just past the last intact record
	stop       error // why reading stopped before size, or nil
	tornHeader bool  // the header itself is torn; end is 0
}

// readSegment calls fn for each intact record of a segment. Damage is
// reported in the scan; the error is for what truncation must not fix: an
// unreadable file or a header of another format.
func readSegment(name string, maxRecord int, fn func(Record, int64)) (scan, error) {
	f, err := os.Open(name)
	if err != nil {
		return scan{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return scan{}, err
	}
	s := scan{size: fi.Size()}
	br := bufio.NewReaderSize(f, 1<<20)
	h := make([]byte, headerSize)
	n, err := io.ReadFull(br, h)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return s, err
	}
	if tornHeader(h[:n]) {
		s.stop, s.tornHeader = errors.New("torn header"), true
		return s, nil
	}
	if _, err := checkHeader(h[:n]); err != nil {
		return s, err
	}
	s.end = headerSize
	var fh [frameHeader]byte
	var body []byte
	for s.end < s.size {
		if s.size-s.end < frameHeader {
			s.stop = errors.New("torn record header")
			return s, nil
		}
		if _, err := io.ReadFull(br, fh[:]); err != nil {
			return s, err
		}
		length := int64(binary.LittleEndian.Uint32(fh[:4]))
		switch {
		case length < minBody:
			s.stop = fmt.Errorf("record length %d too short", length)
		case length > int64(maxRecord):
			s.stop = fmt.Errorf("record length %d over the limit of %d", length, maxRecord)
		case length > s.size-s.end-frameHeader:
			s.stop = fmt.Errorf("torn record: length %d, %d bytes left", length, s.size-s.end-frameHeader)
		}
		if s.stop != nil {
			return s, nil
		}
		if int64(cap(body)) < length {
			body = make([]byte, length)
		}
		body = body[:length]
		if _, err := io.ReadFull(br, body); err != nil {
			return s, err
		}
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(fh[4:]) {
			s.stop = errors.New("checksum mismatch")
			return s, nil
		}
		r, err := decodeBody(body)
		if err != nil {
			s.stop = err
			return s, nil
		}
		fn(r, frameHeader+length)
		s.end += frameHeader + length
	}
	return s, nil
}

// apply makes r part of the index unless a newer version is known, and
// reports whether it did.
func (l *Log) apply(r Record, size int64) bool {
	if cur, ok := l.live[r.ID]; ok {
		if r.Version < cur.rec.Version {
			return false
		}
		l.liveB -= cur.size
		delete(l.live, r.ID)
	} else if v, ok := l.tombs[r.ID]; ok && r.Version < v {
		return false
	}
	if r.Deleted {
		l.tombs[r.ID] = r.Version
		return true
	}
	delete(l.tombs, r.ID)
	l.live[r.ID] = entry{rec: r, size: size}
	l.liveB += size
	return true
}

// Put appends r to the log's buffer; it is durable once a Flush has
// returned. A record older than the known version of its session is
// dropped: newest wins. A tombstone's Data is ignored.
func (l *Log) Put(r Record) error {
	if r.ID == "" {
		return errors.New("sessionlog: empty session ID")
	}
	if r.Deleted {
		r.Data = nil
	}
	if n := bodySize(&r); n > l.opts.MaxRecord {
		return fmt.Errorf("sessionlog: session %q: record of %d bytes over the limit of %d", r.ID, n, l.opts.MaxRecord)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	r.Data = bytes.Clone(r.Data)
	start := len(l.buf)
	l.buf = appendFrame(l.buf, &r)
	if !l.apply(r, int64(len(l.buf)-start)) {
		l.buf = l.buf[:start]
		return nil
	}
	l.appends++
	if len(l.buf) >= writeThrough {
		return l.write()
	}
	return nil
}

func (l *Log) usable() error {
	if l.shut {
		return ErrClosed
	}
	return l.err
}

// write hands the buffer to the OS.
func (l *Log) write() error {
	if len(l.buf) == 0 {
		return nil
	}
	n, err := l.f.Write(l.buf)
	l.segs[len(l.segs)-1].size += int64(n)
	l.dirty = true
	if err != nil {
		l.err = fmt.Errorf("sessionlog: write: %w (reopen the log)", err)
		return l.err
	}
	if cap(l.buf) > 2*writeThrough {
		l.buf = nil
	} else {
		l.buf = l.buf[:0]
	}
	return nil
}

// Flush writes the buffered records and fsyncs them, unless the last fsync
// was less than SyncInterval ago. Once it returns with SyncInterval 0 (the
// default), every record Put before it is durable.
func (l *Log) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flush(false)
}

func (l *Log) flush(force bool) error {
	if err := l.usable(); err != nil {
		return err
	}
	if err := l.write(); err != nil {
		return err
	}
	full := l.segs[len(l.segs)-1].size >= l.opts.segmentSize
	if l.dirty && (force || full || l.opts.SyncInterval == 0 || time.Since(l.last) >= l.opts.SyncInterval) {
		if err := l.f.Sync(); err != nil {
			l.err = fmt.Errorf("sessionlog: fsync: %w (reopen the log)", err)
			return l.err
		}
		l.dirty, l.last = false, time.Now()
		l.flushes++
	}
	if full {
		return l.roll()
	}
	return nil
}

// roll starts a new log segment after the current, synced one.
func (l *Log) roll() error {
	old := l.f
	if err := l.newSegment(l.segs[len(l.segs)-1].seq + 1); err != nil {
		return err // keep appending to the old one
	}
	old.Close()
	return nil
}

// newSegment creates an empty log segment and makes it the current one.
func (l *Log) newSegment(seq uint64) error {
	name := l.path(seq)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	_, err = f.Write(header(kindLog))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(name)
		return fmt.Errorf("sessionlog: new segment: %w", err)
	}
	l.f = f
	l.segs = append(l.segs, segment{seq: seq, size: headerSize})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sessionlog: fsync %s: %w", dir, err)
	}
	return nil
}

// Records returns copies of the live records (no tombstones), sorted by ID.
func (l *Log) Records() []Record {
	l.mu.Lock()
	out := make([]Record, 0, len(l.live))
	for _, e := range l.live {
		r := e.rec
		r.Data = bytes.Clone(r.Data)
		out = append(out, r)
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns a copy of a live session's record.
func (l *Log) Get(id string) (Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.live[id]
	if !ok {
		return Record{}, false
	}
	r := e.rec
	r.Data = bytes.Clone(r.Data)
	return r, true
}

func (l *Log) diskBytes() int64 {
	var n int64
	for _, s := range l.segs {
		n += s.size
	}
	return n
}

// Compact flushes, and if the segments hold more than CompactRatio times
// the live bytes, writes the live records to a new snapshot segment and
// deletes the older ones. A crash at any point leaves a directory Open
// recovers the same records from.
func (l *Log) Compact() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.flush(true); err != nil {
		return err
	}
	if float64(l.diskBytes()) <= l.opts.CompactRatio*float64(headerSize+l.liveB) {
		return nil
	}
	seq := l.segs[len(l.segs)-1].seq + 1
	name := l.path(seq)
	size, err := l.writeSnapshot(name + ".tmp")
	if err != nil {
		os.Remove(name + ".tmp")
		return err
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		os.Remove(name + ".tmp")
		return fmt.Errorf("sessionlog: compact: %w", err)
	}
	// From here the snapshot is the state: Open would use it.
	if err := syncDir(l.dir); err != nil {
		l.err = err
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		l.err = fmt.Errorf("sessionlog: compact: %w (reopen the log)", err)
		return l.err
	}
	l.f.Close()
	l.f = f
	var rmErr error
	for _, s := range l.segs {
		if err := os.Remove(l.path(s.seq)); err != nil && rmErr == nil {
			rmErr = fmt.Errorf("sessionlog: compact: %w (Open will remove it)", err)
		}
	}
	l.segs = []segment{{seq: seq, size: size}}
	clear(l.tombs)
	if err := syncDir(l.dir); err != nil && rmErr == nil {
		rmErr = err
	}
	return rmErr
}

// writeSnapshot writes the live records, sorted by ID, to a new file and
// fsyncs it.
func (l *Log) writeSnapshot(name string) (int64, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("sessionlog: compact: %w", err)
	}
	defer f.Close()
	ids := make([]string, 0, len(l.live))
	for id := range l.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(header(kindSnap))
	size := int64(headerSize)
	var frame []byte
	for _, id := range ids {
		e := l.live[id]
		frame = appendFrame(frame[:0], &e.rec)
		w.Write(frame) // a bufio.Writer keeps its first error
		size += int64(len(frame))
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return 0, fmt.Errorf("sessionlog: compact: %w", err)
	}
	return size, nil
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		Segments:       len(l.segs),
		DiskBytes:      l.diskBytes(),
		LiveBytes:      headerSize + l.liveB,
		Records:        len(l.live),
		TruncatedBytes: l.truncated,
		Appends:        l.appends,
		Flushes:        l.flushes,
	}
}

// Close flushes and fsyncs the buffered records, closes the files and
// releases the directory lock. Calling it again does nothing.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return nil
	}
	err := l.flush(true)
	l.shut = true
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	syscall.Flock(int(l.lock.Fd()), syscall.LOCK_UN)
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	return err
}
