package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/tlsid"
)

// Scenario: mutual TLS ([cluster.tls]) between three keyed nodes, each with
// a certificate naming it, while users write through a round-robin
// balancer. From a host on the bridge, openssl (not flock's code) tries the
// receivers: without a certificate, and with one of another CA, the
// handshake is refused and counted as "tls"; with a certificate of the
// cluster's CA but no cluster key, the connection gets no further than the
// keyring's handshake. Users lose nothing.
func TestMutualTLSCluster(t *testing.T) {
	scenario(t, load, 2*time.Minute)
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed as the outside TLS client (.ci/run installs it): %v", err)
	}
	dir := t.TempDir()
	caCert, caKey, err := tlsid.NewCA("lab CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rogueCert, rogueKey, err := tlsid.NewCA("rogue CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(ca, key []byte, name, file string) (cert, keyFile string) {
		c, k, err := tlsid.Issue(ca, key, name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return write(file+".pem", c), write(file+"-key.pem", k)
	}
	caFile := write("ca.pem", caCert)

	c := newCluster(t)
	nodes := c.three()
	for _, n := range nodes {
		cert, key := issue(caCert, caKey, n.name, n.name)
		n.conf = replicationConf + fmt.Sprintf("\n[cluster.tls]\ncert = %q\nkey = %q\nca = %q\n", cert, key, caFile)
	}
	c.startAll(nodes...)
	c.waitViews(scale(30*time.Second), nodes, c.others())
	for _, n := range nodes {
		n.waitHealthy(t, scale(30*time.Second))
	}

	lb := newBalancer(t, roundRobin, nodes...)
	var st loadStats
	clients := newSessions(t, lb, &st, "user", 6)
	stop := runClients(t, clients, 20*time.Millisecond)
	defer stop()
	waitAcks(t, clients, 3, scale(time.Minute))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	atk, err := c.lab.AddHost(ctx, "attacker")
	if err != nil {
		t.Fatal(err)
	}
	memberCert, memberKey := issue(caCert, caKey, "node9", "node9")
	rogueNode1, rogueNode1Key := issue(rogueCert, rogueKey, "node1", "rogue-node1")
	target := nodes[0].host.IP.String() + ":4000"
	tries := []struct {
		name string
		args []string
	}{
		{"no certificate", nil},
		{"certificate of another CA", []string{"-cert", rogueNode1, "-key", rogueNode1Key}},
		{"certificate of the cluster's CA, no key", []string{"-cert", memberCert, "-key", memberKey}},
	}
	before := refusedMetrics(ctx, t, nodes[0])
	for _, try := range tries {
		// Some bytes after the handshake: what a caller without the
		// cluster key could send.
		cmd := fmt.Sprintf("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | %s s_client -connect %s -tls1_3 -CAfile %s %s",
			openssl, target, caFile, strings.Join(try.args, " "))
		out, err := atk.Exec(ctx, "bash", "-c", cmd)
		t.Logf("openssl, %s: %v\n%s", try.name, err, lastLines(string(out), 4))
	}
	time.Sleep(time.Second) // the receiver counts when it ends the connection
	after := refusedMetrics(ctx, t, nodes[0])
	tlsRefused := after["receiver/tls"] - before["receiver/tls"]
	unkeyed := after["receiver/unauthenticated"] + after["receiver/malformed"] - before["receiver/unauthenticated"] - before["receiver/malformed"]
	if tlsRefused < 2 {
		t.Errorf("TLS handshakes refused: %v, want the 2 without a cluster certificate (refused %v)", tlsRefused, after)
	}
	if unkeyed < 1 {
		t.Errorf("a TLS connection without the cluster key was not refused at the keyring (refused %v)", after)
	}

	time.Sleep(2 * time.Second)
	stop()
	sessions := sessionsOf(clients)
	checkQuiet(t, "mutual TLS", nodes, "delta", sessions, scale(3*antiEntropyInterval+5*time.Second))
	lost, _, _ := checkFinal(t, nodes, sessions)
	regress := checkRegressions(t, sessions)
	figures.addValue(t, "mutual TLS: refused by openssl's tries (tls / at the keyring)", fmt.Sprintf("%v / %v", tlsRefused, unkeyed), "2 / 1")
	figures.addValue(t, "mutual TLS: sessions lost / regressions", fmt.Sprintf("%d / %d", lost, regress), "0 / 0")
	addLoadFigures(t, "mutual TLS", &st)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
