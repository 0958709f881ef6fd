package cluster_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/sender"
)

// recordingSender is a sender.Sender that records where it was asked to
// send: each address is a peer it would have created.
type recordingSender struct {
	sender.Sender // the methods the test does not call
	mu            sync.Mutex
	peers         []netip.AddrPort
}

func (r *recordingSender) Send(_ context.Context, to []netip.AddrPort, _ uint8, _ []byte, _ sender.Mode) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = append(r.peers, to...)
	return nil
}

func (r *recordingSender) Request(_ context.Context, to netip.AddrPort, _ uint8, _ []byte) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = append(r.peers, to)
	return []byte("ok"), nil
}

// listedMembership is a membership service with a fixed member list.
type listedMembership struct {
	fakeMembership
	list []membership.Status
}

func (l *listedMembership) Members() []membership.Status { return l.list }

// TestOnlyMembersAreReached: a send or request to an address no member
// has (as a forged message's claimed sender) creates no peer.
func TestOnlyMembersAreReached(t *testing.T) {
	member := membership.Member{Name: "b", Addr: netip.MustParseAddrPort("198.51.100.2:4000")}
	stranger := membership.Member{Name: "x", Addr: netip.MustParseAddrPort("198.51.100.66:4000")}
	rec := &recordingSender{}
	ms := &listedMembership{list: []membership.Status{{Member: member, State: membership.Alive}}}
	c := cluster.FromParts(membership.Member{Name: "a"}, cluster.Parts{Members: ms, Sender: rec}, nil)
	ctx := context.Background()

	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"send to a member", func() error { return c.Send(ctx, []membership.Member{member}, 16, nil, cluster.Sync) }, nil},
		{"send to a stranger", func() error { return c.Send(ctx, []membership.Member{stranger}, 16, nil, cluster.Sync) }, cluster.ErrNotMember},
		{"send to both", func() error { return c.Send(ctx, []membership.Member{member, stranger}, 16, nil, cluster.Sync) }, cluster.ErrNotMember},
		{"request of a member", func() error { _, err := c.Request(ctx, member, 16, nil); return err }, nil},
		{"request of a stranger", func() error { _, err := c.Request(ctx, stranger, 16, nil); return err }, cluster.ErrNotMember},
	}
	for _, tc := range tests {
		if err := tc.do(); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if slices.Contains(rec.peers, stranger.Addr) || len(rec.peers) != 3 {
		t.Errorf("the sender was asked for %v; want the member's address 3 times, never the stranger's", rec.peers)
	}
}
