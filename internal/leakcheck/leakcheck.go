// Package leakcheck fails a test that leaves goroutines behind.
package leakcheck

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// Check records the goroutines running now and, when the test ends, fails it
// if others are still running after a grace period (goroutines that are
// being stopped may need a moment to return).
func Check(t testing.TB) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		var extra []string
		for {
			extra = extra[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // polling is the only way to observe another goroutine's exit
		}
		if len(extra) > 0 {
			t.Errorf("%d goroutines leaked:\n\n%s", len(extra), strings.Join(extra, "\n\n"))
		}
	})
}

// goroutines maps goroutine ids to stacks, leaving out the runtime's and the
// testing package's own.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		id := strings.Fields(header)
		if len(id) < 2 || ignored(g) {
			continue
		}
		out[id[1]] = g
	}
	return out
}

func ignored(stack string) bool {
	for _, s := range []string{
		"testing.(*T).Run",
		"testing.(*F).Fuzz",
		"testing.tRunner",
		"testing.runTests",
		"testing.(*M).",
		"runtime.goexit0",
		"created by os/signal.Notify",
		"signal.signal_recv",
		"leakcheck.goroutines",
		"runtime.ensureSigM",
		"net/http.(*persistConn)", // kept-alive client connections belong to the shared transport, not to the test
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
