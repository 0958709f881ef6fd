package sessionlog

import (
	"os"
	"path/filepath"
	"testing"
)

// Seeds live in testdata/fuzz/FuzzOpen/; the f.Add calls below add a few
// built in code so the seeds follow the format if it changes.
func FuzzOpen(f *testing.F) {
	var valid []byte
	for _, r := range []Record{rec("a", 1, "hello"), tomb("b", 2), rec("c", 3, ""), rec("a", 0, "stale")} {
		valid = appendFrame(valid, &r)
	}
	f.Add(valid, true)
	f.Add(valid[:len(valid)-2], true)
	f.Add(append(header(kindSnap), valid...), false)
	f.Add([]byte{}, false)
	f.Add(header(kindLog)[:3], false)
	f.Fuzz(func(t *testing.T, data []byte, withHeader bool) {
		opts := Options{MaxRecord: 1 << 16}
		if withHeader {
			data = append(header(kindLog), data...)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, opts)
		if err != nil {
			return
		}
		got := l.Records()
		st := l.Stats()
		if st.Records != len(got) || st.TruncatedBytes < 0 || st.TruncatedBytes > int64(len(data)) {
			t.Fatalf("stats %+v with %d records from %d bytes", st, len(got), len(data))
		}
		// The damaged tail is gone from disk: appending works and a
		// second Open truncates nothing.
		extra := rec("\xffextra", 1, "x")
		if err := l.Put(extra); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(dir, opts)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if n := l.Stats().TruncatedBytes; n != 0 {
			t.Fatalf("second Open truncated %d bytes", n)
		}
		if r, ok := l.Get(extra.ID); !ok || string(r.Data) != "x" {
			// Only a newer version of the same ID in data can hide it.
			if old, found := findID(got, extra.ID); !found || old.Version < extra.Version {
				t.Fatalf("record appended after recovery lost: %+v %v", r, ok)
			}
		}
		l.Close()

		// The recovered records round-trip through a fresh log.
		dir2 := t.TempDir()
		l2, err := Open(dir2, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if err := l2.Put(r); err != nil {
				t.Fatalf("re-Put %+v: %v", r, err)
			}
		}
		if err := l2.Flush(); err != nil {
			t.Fatal(err)
		}
		l2.Close()
		l2, err = Open(dir2, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()
		sameRecords(t, l2.Records(), got)
	})
}

func findID(rs []Record, id string) (Record, bool) {
	for _, r := range rs {
		if r.ID == id {
			return r, true
		}
	}
	return Record{}, false
}
