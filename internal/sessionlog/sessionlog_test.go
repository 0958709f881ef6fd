package sessionlog

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// model applies puts the way the log should: newest version wins, a
// tombstone removes.
type model map[string]Record

func (m model) put(r Record) {
	if cur, ok := m[r.ID]; ok && r.Version < cur.Version {
		return
	}
	m[r.ID] = r
}

func (m model) records() []Record {
	var out []Record
	for _, r := range m {
		if !r.Deleted {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func sameRecords(t *testing.T, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Version != w.Version || g.Deleted != w.Deleted || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
	}
}

func mustOpen(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustPut(t testing.TB, l *Log, rs ...Record) {
	t.Helper()
	for _, r := range rs {
		if err := l.Put(r); err != nil {
			t.Fatal(err)
		}
	}
}

func mustClose(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func rec(id string, v uint64, data string) Record {
	return Record{ID: id, Version: v, Data: []byte(data)}
}

func tomb(id string, v uint64) Record { return Record{ID: id, Version: v, Deleted: true} }

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	many := func() []Record {
		rng := rand.New(rand.NewPCG(1, 2))
		var rs []Record
		for i := range 2000 {
			id := fmt.Sprintf("s%03d", rng.IntN(300))
			v := uint64(rng.IntN(50))
			switch {
			case i%17 == 0:
				rs = append(rs, tomb(id, v))
			default:
				rs = append(rs, rec(id, v, strings.Repeat("x", rng.IntN(200))+id))
			}
		}
		return rs
	}
	tests := []struct {
		name    string
		puts    []Record
		segSize int64
		want    []Record // nil: the model's answer
	}{
		{name: "empty"},
		{name: "one", puts: []Record{rec("a", 1, "hello")}},
		{name: "empty data", puts: []Record{rec("a", 1, "")}},
		{name: "overwrite", puts: []Record{rec("a", 1, "one"), rec("a", 2, "two")}, want: []Record{rec("a", 2, "two")}},
		{name: "older version later is ignored", puts: []Record{rec("a", 5, "new"), rec("a", 3, "old")}, want: []Record{rec("a", 5, "new")}},
		{name: "same version later wins", puts: []Record{rec("a", 5, "first"), rec("a", 5, "second")}, want: []Record{rec("a", 5, "second")}},
		{name: "tombstone deletes", puts: []Record{rec("a", 1, "x"), rec("b", 1, "y"), tomb("a", 2)}, want: []Record{rec("b", 1, "y")}},
		{name: "stale put after tombstone", puts: []Record{rec("a", 1, "x"), tomb("a", 4), rec("a", 3, "late")}, want: []Record{}},
		{name: "stale tombstone", puts: []Record{rec("a", 4, "x"), tomb("a", 2)}, want: []Record{rec("a", 4, "x")}},
		{name: "revived after tombstone", puts: []Record{rec("a", 1, "x"), tomb("a", 2), rec("a", 3, "again")}, want: []Record{rec("a", 3, "again")}},
		{name: "binary IDs and data", puts: []Record{{ID: "\x00\xff", Version: 1, Data: []byte{0, 1, 2}}}},
		{name: "many", puts: many()},
		{name: "many across segments", puts: many(), segSize: 4 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				m := model{}
				for _, r := range tt.puts {
					m.put(r)
				}
				want = m.records()
			}
			dir := t.TempDir()
			opts := Options{segmentSize: tt.segSize}
			l := mustOpen(t, dir, opts)
			for i, r := range tt.puts {
				mustPut(t, l, r)
				if i%100 == 99 {
					if err := l.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			sameRecords(t, l.Records(), want)
			mustClose(t, l)
			if tt.segSize > 0 && len(segFiles(t, dir)) < 2 {
				t.Fatalf("expected several segments, got %v", segFiles(t, dir))
			}

			l = mustOpen(t, dir, opts)
			defer l.Close()
			sameRecords(t, l.Records(), want)
			for _, w := range want {
				got, ok := l.Get(w.ID)
				if !ok || got.Version != w.Version || !bytes.Equal(got.Data, w.Data) {
					t.Fatalf("Get(%q) = %+v, %v; want %+v", w.ID, got, ok, w)
				}
			}
			if _, ok := l.Get("no such session"); ok {
				t.Fatal("Get of an unknown ID found something")
			}
			st := l.Stats()
			if st.Records != len(want) || st.TruncatedBytes != 0 || st.Segments != len(segFiles(t, dir)) {
				t.Fatalf("stats %+v, want %d records, none truncated, %d segments", st, len(want), len(segFiles(t, dir)))
			}
		})
	}
}

func TestCopies(t *testing.T) {
	l := mustOpen(t, t.TempDir(), DefaultOptions())
	defer l.Close()
	data := []byte("abc")
	mustPut(t, l, Record{ID: "a", Version: 1, Data: data})
	data[0] = 'X'
	r, _ := l.Get("a")
	r.Data[1] = 'Y'
	l.Records()[0].Data[2] = 'Z'
	if r, _ := l.Get("a"); string(r.Data) != "abc" {
		t.Fatalf("stored data changed through a caller's slice: %q", r.Data)
	}
}

func TestPutRefuses(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{MaxRecord: 100})
	overhead := bodySize(&Record{ID: "a"})
	tests := []struct {
		name string
		r    Record
		ok   bool
	}{
		{"at the limit", Record{ID: "a", Version: 1, Data: make([]byte, 100-overhead)}, true},
		{"one over", Record{ID: "a", Version: 2, Data: make([]byte, 101-overhead)}, false},
		{"long ID", Record{ID: strings.Repeat("i", 200), Version: 1}, false},
		{"big tombstone data is dropped", Record{ID: "b", Version: 1, Deleted: true, Data: make([]byte, 1000)}, true},
		{"empty ID", Record{Version: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := l.Put(tt.r); (err == nil) != tt.ok {
				t.Fatalf("Put: err = %v, want ok = %v", err, tt.ok)
			}
		})
	}
	mustClose(t, l)
	if err := l.Put(rec("c", 1, "")); err != ErrClosed {
		t.Fatalf("Put after Close: %v, want ErrClosed", err)
	}
	if err := l.Flush(); err != ErrClosed {
		t.Fatalf("Flush after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A record written with a bigger limit is damage to a log opened with a
// smaller one.
func TestMaxRecordOnRead(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, DefaultOptions())
	mustPut(t, l, rec("small", 1, "x"), rec("big", 1, strings.Repeat("x", 1000)))
	mustClose(t, l)
	l = mustOpen(t, dir, Options{MaxRecord: 500})
	defer l.Close()
	sameRecords(t, l.Records(), []Record{rec("small", 1, "x")})
	if l.Stats().TruncatedBytes == 0 {
		t.Fatal("oversized tail record not reported as truncated")
	}
}

// buildLog writes records to a fresh log and returns the directory, the
// records and the offset at which the last record starts in the last
// segment.
func buildLog(t *testing.T, opts Options) (dir string, rs []Record, lastStart int64) {
	dir = t.TempDir()
	l := mustOpen(t, dir, opts)
	for i := range 50 {
		rs = append(rs, rec(fmt.Sprintf("s%02d", i), uint64(i+1), strings.Repeat("d", i*3)))
	}
	for i, r := range rs[:len(rs)-1] {
		mustPut(t, l, r)
		if i%10 == 9 || i == len(rs)-2 {
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	segs := segFiles(t, dir)
	fi, err := os.Stat(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, l, rs[len(rs)-1])
	mustClose(t, l)
	if got := segFiles(t, dir); len(got) != len(segs) {
		t.Fatalf("the last record went to a new segment")
	}
	return dir, rs, fi.Size()
}

func TestTornTail(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"one segment", DefaultOptions()},
		{"several segments", Options{segmentSize: 512}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, rs, start := buildLog(t, tt.opts)
			segs := segFiles(t, src)
			last := filepath.Base(segs[len(segs)-1])
			full, err := os.ReadFile(segs[len(segs)-1])
			if err != nil {
				t.Fatal(err)
			}
			for cut := start + 1; cut < int64(len(full)); cut++ {
				dir := t.TempDir()
				copyDir(t, src, dir)
				if err := os.Truncate(filepath.Join(dir, last), cut); err != nil {
					t.Fatal(err)
				}
				l, err := Open(dir, tt.opts)
				if err != nil {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				sameRecords(t, l.Records(), rs[:len(rs)-1])
				if got := l.Stats().TruncatedBytes; got != cut-start {
					t.Fatalf("cut at %d: TruncatedBytes = %d, want %d", cut, got, cut-start)
				}
				// The cut is on disk: appending and reopening works.
				mustPut(t, l, rs[len(rs)-1])
				mustClose(t, l)
				l = mustOpen(t, dir, tt.opts)
				sameRecords(t, l.Records(), rs)
				if got := l.Stats().TruncatedBytes; got != 0 {
					t.Fatalf("cut at %d: second Open truncated %d bytes", cut, got)
				}
				mustClose(t, l)
			}
		})
	}
}

func TestDamage(t *testing.T) {
	small := Options{segmentSize: 512}
	tests := []struct {
		name    string
		damage  func(t *testing.T, segs []string)
		errName string // "": Open must succeed and truncate
	}{
		{"byte flipped in the middle of an older segment", func(t *testing.T, segs []string) {
			flip(t, segs[0], -1)
		}, "000001.log"},
		{"byte flipped in a middle segment", func(t *testing.T, segs []string) {
			flip(t, segs[1], -1)
		}, "000002.log"},
		{"older segment cut short", func(t *testing.T, segs []string) {
			fi, _ := os.Stat(segs[0])
			os.Truncate(segs[0], fi.Size()-3)
		}, "000001.log"},
		{"older segment with a foreign header", func(t *testing.T, segs []string) {
			os.WriteFile(segs[0], []byte("not a log at all"), 0o600)
		}, "000001.log"},
		{"last segment of a newer format", func(t *testing.T, segs []string) {
			b, _ := os.ReadFile(segs[len(segs)-1])
			b[4] = 2
			os.WriteFile(segs[len(segs)-1], b, 0o600)
		}, "unsupported format version"},
		{"garbage appended", func(t *testing.T, segs []string) {
			appendBytes(t, segs[len(segs)-1], randBytes(1, 300))
		}, ""},
		{"zeros appended", func(t *testing.T, segs []string) {
			appendBytes(t, segs[len(segs)-1], make([]byte, 4096))
		}, ""},
		{"plausible length appended", func(t *testing.T, segs []string) {
			appendBytes(t, segs[len(segs)-1], []byte{200, 0, 0, 0, 1, 2, 3, 4, 5})
		}, ""},
		{"torn header of a new last segment", func(t *testing.T, segs []string) {
			os.WriteFile(filepath.Join(filepath.Dir(segs[0]), segName(99)), header(kindLog)[:5], 0o600)
		}, ""},
		{"zeroed header of a new last segment", func(t *testing.T, segs []string) {
			os.WriteFile(filepath.Join(filepath.Dir(segs[0]), segName(99)), make([]byte, 20), 0o600)
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, rs, _ := buildLog(t, small)
			segs := segFiles(t, dir)
			if len(segs) < 3 {
				t.Fatalf("want at least 3 segments, got %d", len(segs))
			}
			tt.damage(t, segs)
			l, err := Open(dir, small)
			if tt.errName != "" {
				if err == nil {
					l.Close()
					t.Fatalf("Open succeeded, want an error naming %s", tt.errName)
				}
				if !strings.Contains(err.Error(), tt.errName) {
					t.Fatalf("error %q does not name %s", err, tt.errName)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			sameRecords(t, l.Records(), rs)
			if l.Stats().TruncatedBytes == 0 {
				t.Fatal("TruncatedBytes = 0")
			}
		})
	}
}

func flip(t *testing.T, name string, off int) {
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off = len(b) / 2
	}
	b[off] ^= 0x40
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, name string, extra []byte) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(extra); err != nil {
		t.Fatal(err)
	}
}

func randBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func dirBytes(t *testing.T, dir string) int64 {
	var n int64
	for _, s := range segFiles(t, dir) {
		fi, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func TestCompact(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		rounds  int
		compact bool // whether the disk should shrink
	}{
		{"many overwrites", DefaultOptions(), 20, true},
		{"many overwrites, several segments", Options{segmentSize: 2048}, 20, true},
		{"one round: nothing to gain", DefaultOptions(), 1, false},
		{"ratio too high to trigger", Options{CompactRatio: 100}, 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, tt.opts)
			m := model{}
			for round := range tt.rounds {
				for i := range 40 {
					r := rec(fmt.Sprintf("s%02d", i), uint64(round), fmt.Sprintf("round %d %s", round, strings.Repeat("p", i)))
					if round == tt.rounds-1 && i%5 == 0 {
						r = tomb(r.ID, r.Version)
					}
					mustPut(t, l, r)
					m.put(r)
				}
				if err := l.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			before := dirBytes(t, dir)
			if err := l.Compact(); err != nil {
				t.Fatal(err)
			}
			after := dirBytes(t, dir)
			st := l.Stats()
			if st.DiskBytes != after {
				t.Fatalf("Stats.DiskBytes = %d, files hold %d", st.DiskBytes, after)
			}
			if tt.compact {
				if after >= before || st.DiskBytes != st.LiveBytes || st.Segments != 1 {
					t.Fatalf("disk %d -> %d bytes, stats %+v: want one segment of the live bytes", before, after, st)
				}
			} else if after != before {
				t.Fatalf("disk %d -> %d bytes, want no compaction", before, after)
			}
			sameRecords(t, l.Records(), m.records())
			// Appends after a compaction land in the snapshot and survive.
			extra := rec("after", 1, "compaction")
			mustPut(t, l, extra)
			m.put(extra)
			mustClose(t, l)
			l = mustOpen(t, dir, tt.opts)
			sameRecords(t, l.Records(), m.records())
			mustClose(t, l)
		})
	}
}

// A compaction drops tombstones; the records they shadowed go with the
// older segments, so nothing comes back.
func TestCompactDropsTombstones(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, DefaultOptions())
	mustPut(t, l, rec("a", 1, "x"), rec("b", 1, "y"), tomb("a", 2))
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	l = mustOpen(t, dir, DefaultOptions())
	defer l.Close()
	sameRecords(t, l.Records(), []Record{rec("b", 1, "y")})
	if len(segFiles(t, dir)) != 1 {
		t.Fatalf("segments %v, want one", segFiles(t, dir))
	}
}

func TestCrashDuringCompaction(t *testing.T) {
	// The state before and after: three segments of overwrites and
	// deletions, then a compaction.
	setup := func(t *testing.T) (dir, old string, want []Record) {
		dir, old = t.TempDir(), t.TempDir()
		opts := Options{segmentSize: 1024}
		l := mustOpen(t, dir, opts)
		m := model{}
		for round := range 10 {
			for i := range 20 {
				r := rec(fmt.Sprintf("s%02d", i), uint64(round), fmt.Sprint("round ", round))
				if round == 9 && i%3 == 0 {
					r = tomb(r.ID, r.Version)
				}
				mustPut(t, l, r)
				m.put(r)
			}
			l.Flush()
		}
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
		copyDir(t, dir, old)
		if err := l.Compact(); err != nil {
			t.Fatal(err)
		}
		mustClose(t, l)
		if len(segFiles(t, old)) < 3 || len(segFiles(t, dir)) != 1 {
			t.Fatalf("setup: %d segments before, %d after", len(segFiles(t, old)), len(segFiles(t, dir)))
		}
		return dir, old, m.records()
	}
	tests := []struct {
		name  string
		crash func(t *testing.T, dir, old string) string // returns the dir to Open
	}{
		{"before the rename: a partial temp file", func(t *testing.T, dir, old string) string {
			snap, _ := os.ReadFile(segFiles(t, dir)[0])
			last := segFiles(t, old)[len(segFiles(t, old))-1]
			seq, _ := parseSegName(filepath.Base(last))
			os.WriteFile(filepath.Join(old, segName(seq+1)+".tmp"), snap[:len(snap)/2], 0o600)
			return old
		}},
		{"before the rename: a complete temp file", func(t *testing.T, dir, old string) string {
			snap, _ := os.ReadFile(segFiles(t, dir)[0])
			os.WriteFile(filepath.Join(old, filepath.Base(segFiles(t, dir)[0])+".tmp"), snap, 0o600)
			return old
		}},
		{"after the rename: all old segments left", func(t *testing.T, dir, old string) string {
			copyDir(t, old, dir)
			return dir
		}},
		{"after the rename: some old segments deleted", func(t *testing.T, dir, old string) string {
			copyDir(t, old, dir)
			os.Remove(segFiles(t, dir)[0])
			return dir
		}},
		{"after the rename: old segments left, one damaged", func(t *testing.T, dir, old string) string {
			copyDir(t, old, dir)
			flip(t, segFiles(t, dir)[0], -1)
			return dir
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, old, want := setup(t)
			open := tt.crash(t, dir, old)
			l := mustOpen(t, open, Options{})
			sameRecords(t, l.Records(), want)
			mustClose(t, l)
			if m, _ := filepath.Glob(filepath.Join(open, "*.tmp")); len(m) != 0 {
				t.Fatalf("temp files left: %v", m)
			}
			// Whatever Open cleaned up, a second Open agrees.
			l = mustOpen(t, open, Options{})
			sameRecords(t, l.Records(), want)
			mustClose(t, l)
		})
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, DefaultOptions())
	l2, err := Open(dir, DefaultOptions())
	if err == nil {
		l2.Close()
		t.Fatal("second Open of a locked directory succeeded")
	}
	if !strings.Contains(err.Error(), "locked") {
		t.Fatalf("unclear error: %v", err)
	}
	mustClose(t, l)
	mustClose(t, l) // idempotent
	l2 = mustOpen(t, dir, DefaultOptions())
	mustClose(t, l2)
}

func TestSyncInterval(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		flushes  uint64 // fsyncs after three Flushes of new data
	}{
		{"every flush", 0, 3},
		{"at most hourly", time.Hour, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, Options{SyncInterval: tt.interval})
			for i := range 3 {
				mustPut(t, l, rec("a", uint64(i), "x"))
				if err := l.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Flush(); err != nil { // nothing new
				t.Fatal(err)
			}
			st := l.Stats()
			if st.Flushes != tt.flushes || st.Appends != 3 {
				t.Fatalf("stats %+v, want %d flushes and 3 appends", st, tt.flushes)
			}
			mustClose(t, l)
			l = mustOpen(t, dir, Options{})
			defer l.Close()
			if r, ok := l.Get("a"); !ok || r.Version != 2 {
				t.Fatalf("after reopen: %+v, %v", r, ok)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{segmentSize: 8 << 10})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				r := rec(fmt.Sprintf("w%d-%02d", w, i%50), uint64(i), strings.Repeat("c", i%64))
				if err := l.Put(r); err != nil {
					t.Error(err)
					return
				}
				l.Get(r.ID)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if err := l.Flush(); err != nil {
				t.Error(err)
			}
			l.Records()
			l.Stats()
			if err := l.Compact(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	want := l.Records()
	if len(want) != 200 {
		t.Fatalf("%d records, want 200", len(want))
	}
	mustClose(t, l)
	l = mustOpen(t, dir, Options{})
	defer l.Close()
	sameRecords(t, l.Records(), want)
}

func TestOpenCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	l := mustOpen(t, dir, DefaultOptions())
	mustClose(t, l)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	if segs := segFiles(t, dir); len(segs) != 1 || filepath.Base(segs[0]) != "000001.log" {
		t.Fatalf("segments %v", segs)
	}
}

func BenchmarkPut1KiB(b *testing.B) {
	l := mustOpen(b, b.TempDir(), DefaultOptions())
	defer l.Close()
	data := randBytes(3, 1024)
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = fmt.Sprintf("session-%05d", i)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := l.Put(Record{ID: ids[i%len(ids)], Version: uint64(i), Data: data}); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			if err := l.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := l.Flush(); err != nil {
		b.Fatal(err)
	}
}
