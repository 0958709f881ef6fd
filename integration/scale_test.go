package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// scaleMemberships are the membership kinds the scale bench compares;
// conf configures the nodes (all created, none started).
var scaleMemberships = []struct {
	name string
	conf func(nodes []*node)
}{
	{"multicast", func([]*node) {}},
	{"gossip", func(nodes []*node) {
		// Three seeds, as a deployment would list: any one answering is
		// enough to join.
		for _, n := range nodes {
			gossipConf(n, nodes[:3]...)
		}
	}},
}

// scaleSizes are the cluster sizes of the scale bench: FLOCK_SCALE
// ("3,10,30,60" for the README's figures), else 3 and 10 (CI).
func scaleSizes(t *testing.T) []int {
	t.Helper()
	v := os.Getenv("FLOCK_SCALE")
	if v == "" {
		return []int{3, 10}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 || n > 200 {
			t.Fatalf("FLOCK_SCALE=%q: want sizes from 3 to 200, comma-separated", v)
		}
		out = append(out, n)
	}
	return out
}

// Scale bench (issue 14): N flockd processes, one per lab host, for each
// membership kind: how long the last node to join takes until every node
// lists every other, how long until the others drop a node killed with
// SIGKILL and one stopped with SIGSTOP (and take the stopped one back
// after SIGCONT), and what the cluster costs at rest, per node and second:
// CPU (user + system, from /proc) and packets (sent + received on the
// host's interface).
func TestScaleMembership(t *testing.T) {
	scenario(t, alone, 0)
	rest := 10 * time.Second
	if os.Getenv("FLOCK_SCALE") == "" {
		rest = 4 * time.Second
	}
	for _, ms := range scaleMemberships {
		for _, n := range scaleSizes(t) {
			t.Run(fmt.Sprintf("%s/%d", ms.name, n), func(t *testing.T) {
				scaleOne(t, ms.name, ms.conf, n, rest)
			})
		}
	}
}

func scaleOne(t *testing.T, kind string, conf func([]*node), size int, rest time.Duration) {
	c := newQuietCluster(t)
	nodes := c.nodesN(size)
	conf(nodes)
	label := fmt.Sprintf("scale %s %d nodes", kind, size)
	early, last := nodes[:size-1], nodes[size-1]
	// The first nodes start in waves of ten, each settling before the
	// next starts, as an operator would roll a large cluster out (59
	// processes starting at once on two cores time each other out); each
	// wave's cost at rest is the curve that says how many nodes fit here.
	for started := 0; started < len(early); {
		wave := early[started:min(started+scaleWave, len(early))]
		c.startAll(wave...)
		started += len(wave)
		up, pending := early[:started], nodes[started:]
		c.waitViews(scale(time.Duration(len(up))*time.Second+30*time.Second), up, c.others(pending...))
		if started < len(early) {
			cores, _ := scaleRest(t, up, 3*time.Second)
			t.Logf("%s: %d up, at rest %.2f cores in all (%.1f ms per node per second)",
				label, started, cores, 1000*cores/float64(started))
		}
	}
	c.start(last)
	bound := scale(10*time.Second + time.Duration(size)*200*time.Millisecond)
	took := c.waitViews(bound, nodes, c.others())
	figures.add(t, label+": the last to join listed by all, all listed by it", took, bound)

	// At rest.
	cores, packets := scaleRest(t, nodes, rest)
	figures.addValue(t, label+": at rest, per node per second: CPU / packets",
		fmt.Sprintf("%.2f ms / %.1f", 1000*cores/float64(size), packets/float64(size)), "report only")
	figures.addValue(t, label+": at rest, the whole cluster", fmt.Sprintf("%.2f cores", cores), "report only")

	// kill -9 one node, SIGSTOP another.
	killed, paused := nodes[1], nodes[2]
	if err := killed.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	dropBound := scale(30 * time.Second)
	took = c.waitViews(dropBound, without(nodes, killed), c.others(killed))
	figures.add(t, label+": kill -9 dropped by every other node", took, dropBound)
	if err := paused.proc.Pause(); err != nil {
		t.Fatal(err)
	}
	live := without(without(nodes, killed), paused)
	took = c.waitViews(dropBound, live, c.others(killed, paused))
	figures.add(t, label+": SIGSTOP dropped by every other node", took, dropBound)
	if err := paused.proc.Resume(); err != nil {
		t.Fatal(err)
	}
	took = c.waitViews(dropBound, without(nodes, killed), c.others(killed))
	figures.add(t, label+": after SIGCONT listed again by all", took, dropBound)
}

// scaleWave is how many nodes the scale bench starts at once.
const scaleWave = 10

// scaleRest is what the nodes use together over a window: CPU in cores
// and packets per second.
func scaleRest(t *testing.T, nodes []*node, window time.Duration) (cores, packets float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cpu0, pk0 := scaleUsage(ctx, t, nodes)
	begin := time.Now()
	time.Sleep(window) // a measuring window: nothing to await
	cpu1, pk1 := scaleUsage(ctx, t, nodes)
	secs := time.Since(begin).Seconds()
	return (cpu1 - cpu0) / secs, (pk1 - pk0) / secs
}

// scaleUsage sums, over the nodes, the CPU seconds their processes used
// and the packets their hosts' interfaces sent and received.
func scaleUsage(ctx context.Context, t *testing.T, nodes []*node) (cpu, packets float64) {
	t.Helper()
	for _, n := range nodes {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.proc.Pid()))
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		// The fields after the command (which may hold spaces): utime and
		// stime are the 12th and 13th, in clock ticks (100 a second).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		for _, i := range []int{11, 12} {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				t.Fatalf("%s: /proc stat field %d: %v", n.name, i, err)
			}
			cpu += v / 100
		}
		for _, dir := range []string{"rx", "tx"} {
			out, err := n.host.Exec(ctx, "cat", "/sys/class/net/"+lab.HostIface+"/statistics/"+dir+"_packets")
			if err != nil {
				t.Fatalf("%s: %v", n.name, err)
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				t.Fatalf("%s: %s packets %q: %v", n.name, dir, out, err)
			}
			packets += v
		}
	}
	return cpu, packets
}
