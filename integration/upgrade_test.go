//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// upgradeFrom is the earlier flockd the upgrade scenario starts from: main
// before the admin port, the version cookie and the configuration from the
// environment (issues 12 and 13). The test builds it from the repository's
// own history; nothing is downloaded but modules.
const upgradeFrom = "5ec2404"

// oldFlockd builds flockd at upgradeFrom, once.
var oldFlockd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "flock-upgrade-")
	if err != nil {
		return "", err
	}
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", err
	}
	var out bytes.Buffer
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C .. archive %s | tar -x -C %s", upgradeFrom, src))
	archive.Stdout, archive.Stderr = &out, &out
	if err := archive.Run(); err != nil {
		return "", fmt.Errorf("git archive %s: %w\n%s", upgradeFrom, err, out.String())
	}
	bin := filepath.Join(dir, "flockd-"+upgradeFrom)
	build := exec.Command("go", "build", "-o", bin, "./cmd/flockd")
	build.Dir, build.Stdout, build.Stderr = src, &out, &out
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building flockd %s: %w\n%s", upgradeFrom, err, out.String())
	}
	return bin, nil
})

// Scenario: a rolling upgrade under load, both ways a deploy replaces
// nodes. Three nodes of the earlier flockd serve users through a
// round-robin balancer. "same names": each in turn is taken out of the
// balancer, stopped with SIGTERM and replaced by this tree's flockd under
// the same name (a StatefulSet). "new names": for each, a node of this
// tree's flockd under a new name on a new host joins and takes users,
// then the old one is taken out and stopped (a Deployment's pods); the
// sessions routed to the old names are rewritten to the new nodes by the
// requests that follow. In both, old and new run in one cluster for a
// while, no request fails, no write or session is lost, and the replicas
// agree at the end.
func TestRollingUpgrade(t *testing.T) {
	scenario(t, load, 2*time.Minute)
	for _, m := range modes {
		for _, newNames := range []bool{false, true} {
			name := m.name + ", " + map[bool]string{false: "same names", true: "new names"}[newNames]
			t.Run(name, func(t *testing.T) { rollingUpgrade(t, name, m.name, m.conf, newNames) })
		}
	}
}

func rollingUpgrade(t *testing.T, label, mode, modeConf string, newNames bool) {
	old, err := oldFlockd()
	if err != nil {
		t.Fatal(err)
	}
	// The old flockd serves its admin endpoints and /healthz on its HTTP
	// port, and knows no drain_grace: its [server] table stays empty.
	const oldConf = "[server]\n"
	const newConf = "[server]\ndrain_grace = \"1s\"\n"
	// In backup mode the earlier release puts a session's backup on the
	// next node by name: the new nodes keep that placement ("ring") while
	// old ones serve, or the two would disagree on where a session's copy
	// is and fork it; the "same names" roll then switches to rendezvous
	// placement by rolling again, as the README's upgrade notes say.
	rollConf := modeConf + newConf
	if mode == "backup" {
		rollConf = modeConf + "placement = \"ring\"\n" + newConf
	}
	c := newCluster(t)
	nodes := c.three()
	for _, n := range nodes {
		n.binary, n.conf, n.adminAddr = old, modeConf+oldConf, n.host.IP.String()+":8080"
	}
	var fresh []*node // the new names' nodes, started one by one
	if newNames {
		fresh = []*node{c.add("node4", "default"), c.add("node5", "default"), c.add("node6", "default")}
		for _, n := range fresh {
			n.conf = rollConf
		}
	}
	c.startAll(nodes...)
	c.waitViews(scale(30*time.Second), nodes, c.others(fresh...))
	for _, n := range nodes {
		n.waitHealthy(t, scale(30*time.Second))
	}
	lb := newBalancer(t, roundRobin, append(slices.Clone(nodes), fresh...)...)
	for _, n := range fresh {
		lb.exclude(n.name, true) // not started yet
	}
	var st loadStats
	clients := newSessions(t, lb, &st, "user", 20)
	stop := runClients(t, clients, 5*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), scale(5*time.Minute))
	defer cancel()
	start := time.Now()
	live := slices.Clone(nodes)
	for i, n := range nodes {
		if newNames {
			f := fresh[i]
			c.start(f)
			live = append(live, f)
			f.waitHealthy(t, scale(30*time.Second))
			lb.exclude(f.name, false)
		}
		lb.exclude(n.name, true) // as a balancer whose health check saw the drain
		if err := n.proc.Stop(ctx); err != nil {
			t.Fatalf("%s: stop: %v", n.name, err)
		}
		if newNames {
			live = slices.DeleteFunc(live, func(o *node) bool { return o == n })
		} else {
			n.binary, n.conf, n.adminAddr = "", rollConf, ""
			c.start(n)
			n.waitHealthy(t, scale(30*time.Second))
			lb.exclude(n.name, false)
		}
		c.waitViews(scale(30*time.Second), live, func(x *node) []string {
			var names []string
			for _, o := range live {
				if o != x {
					names = append(names, o.name)
				}
			}
			return names
		})
		// Old and new serve together for a while.
		time.Sleep(time.Second)
	}
	if mode == "backup" && !newNames {
		// Every node runs this tree: switch to rendezvous placement, one
		// node at a time, under the same load.
		for _, n := range nodes {
			lb.exclude(n.name, true)
			if err := n.proc.Stop(ctx); err != nil {
				t.Fatalf("%s: stop: %v", n.name, err)
			}
			n.conf = modeConf + newConf
			c.start(n)
			n.waitHealthy(t, scale(30*time.Second))
			lb.exclude(n.name, false)
			c.waitViews(scale(30*time.Second), live, c.others(fresh...))
			time.Sleep(time.Second) // ring and rendezvous nodes serve together for a while
		}
		label += ", then ring to rendezvous"
	}
	upgraded := time.Since(start)
	time.Sleep(time.Second)
	stop()

	sessions := sessionsOf(clients)
	bound := scale(3*antiEntropyInterval + 5*time.Second)
	diverged, _ := checkQuiet(t, "rolling upgrade, "+label, live, mode, sessions, bound)
	lost, _, _ := checkFinal(t, live, sessions)
	regress := checkRegressions(t, sessions)
	failed := st.n503.Load() + st.errs.Load()
	figures.add(t, fmt.Sprintf("rolling upgrade %s -> this tree, %s, 3 nodes, under load (%d requests)", upgradeFrom, label, st.requests.Load()), upgraded, scale(3*time.Minute))
	figures.addValue(t, "rolling upgrade, "+label+": requests failed / writes lost / answered below / diverged",
		fmt.Sprintf("%d / %d / %d / %d", failed, lost, regress, diverged), "report / 0 / 0 / 0")
	// A 503 is reported, not failed on: with the earlier release, which
	// sends no draining notice, a commit racing a leaving node's goodbye can
	// find no copy (backup mode, one in five runs under -race in CI); the
	// user is told to retry, and nothing is lost, which is asserted above.
	if st.errs.Load() != 0 {
		t.Errorf("%d requests failed during the upgrade without an answer", st.errs.Load())
	}
}
