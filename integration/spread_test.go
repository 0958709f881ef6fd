package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// envInt is the integer in environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// Scenario (issue 14): in backup mode, the owner of many sessions dies
// (kill -9). Its sessions' new owners are their backups, spread over every
// survivor by rendezvous placement, and each new owner copies its share to
// a new backup, also spread. Measured from outside: per survivor, the
// sessions it copied as their new owner (the takeover work), and the time
// until every session has two live copies again. CI runs 5 nodes and 1,000
// sessions; FLOCK_SPREAD_NODES and FLOCK_SPREAD_SESSIONS run it larger
// (the README's figures: 10 nodes, 10,000 sessions).
func TestBackupTakeoverSpread(t *testing.T) {
	nodesN := envInt(t, "FLOCK_SPREAD_NODES", 5)
	sessions := envInt(t, "FLOCK_SPREAD_SESSIONS", 1000)
	if nodesN < 3 {
		t.Fatalf("FLOCK_SPREAD_NODES=%d: at least 3", nodesN)
	}
	scenario(t, load, 90*time.Second)
	c := newCluster(t)
	nodes := c.nodesN(nodesN)
	c.startWith(backupConf, nodes...)
	checkMode(t, nodes, "backup")
	loadBegins(t)
	owner, survivors := nodes[0], nodes[1:]

	ctx, cancel := context.WithTimeout(context.Background(), scale(5*time.Minute))
	defer cancel()
	// The sessions, all created on (so owned by) the first node.
	refs := make(map[string]bool, sessions)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan struct{})
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				_, cookie, err := owner.counterOn(ctx, "/counter", "")
				if err == nil && cookie == "" {
					err = fmt.Errorf("%s: no session cookie", owner.name)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				mu.Lock()
				refs[refOf(cookie)] = true
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for range sessions {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("creating sessions: %v", err)
	default:
	}
	t.Logf("%d sessions created on %s in %v", len(refs), owner.name, time.Since(start).Round(time.Millisecond))

	twoCopies := func(on []*node, bound time.Duration) (time.Duration, int) {
		t.Helper()
		begin := time.Now()
		short := len(refs)
		for time.Since(begin) < bound && ctx.Err() == nil {
			h, err := hashesOf(ctx, on)
			if err == nil {
				short = 0
				for ref := range refs {
					if len(h[ref]) != 2 {
						short++
					}
				}
				if short == 0 {
					return time.Since(begin), 0
				}
			}
			time.Sleep(100 * time.Millisecond) // polling another process's state: no event to await
		}
		return time.Since(begin), short
	}
	if took, short := twoCopies(nodes, scale(time.Minute)); short > 0 {
		t.Fatalf("%d of %d sessions not on two nodes after %v", short, len(refs), took)
	}
	before := make([]uint64, len(survivors))
	for i, n := range survivors {
		st, err := n.managerStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = st.Manager.Copied
	}

	if err := owner.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	bound := scale(2 * time.Minute)
	took, short := twoCopies(survivors, bound)
	if short > 0 {
		t.Errorf("%d of %d sessions still without two live copies %v after the owner's death", short, len(refs), took)
	}
	var most, total uint64
	var per []uint64
	for i, n := range survivors {
		st, err := n.managerStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := st.Manager.Copied - before[i]
		per = append(per, d)
		most = max(most, d)
		total += d
	}
	mean := float64(total) / float64(len(survivors))
	label := fmt.Sprintf("takeover %d nodes, %d sessions", nodesN, len(refs))
	figures.add(t, label+": every session on two live nodes again", took, bound)
	figures.addValue(t, label+": sessions copied per survivor, max / mean (all)", fmt.Sprintf("%d / %.0f (%v)", most, mean, per), "max at most 2x mean")
	if total < uint64(len(refs)) {
		t.Errorf("survivors copied %d sessions in all, fewer than the %d the dead owner held", total, len(refs))
	}
	if float64(most) > 2*mean {
		t.Errorf("takeover uneven: one survivor copied %d, the mean is %.0f", most, mean)
	}
}
