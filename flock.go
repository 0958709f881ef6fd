// Package flock keeps HTTP sessions alive when a Go server dies: every node
// of a cluster holds the sessions (delta mode) or an owner and a backup do
// (backup mode), and a change made by one request is replicated before its
// response leaves.
//
// This package is the front door. A program starts a node from a
// configuration, wraps its handler, and reads and writes the request's
// session inside it:
//
//	cfg, err := conf.Load("server.toml") // or conf.Default()
//	node, err := flock.Start(ctx, cfg)
//	defer node.Stop(context.Background())
//	http.ListenAndServe(":8080", node.Wrap(app))
//
// and in a handler of app:
//
//	s, err := flock.SessionOf(r)          // the request's session, created if it has none
//	n, _, _ := flock.Get[int](s, "visits") // values are stored encoded: Get decodes a copy
//	s.Set("visits", n+1)                  // replicated when the response commits
//
// Session values change only through Set and Delete, so a change can never
// be missed; Invalidate logs the user out on every node, RenewID gives the
// session a new id after a login. Existing reads the session without creating
// one, for pages that need none.
//
// A node is configured by server.toml (package conf: every key has a
// default, conf.Default; a bad key is refused with its file and line). The
// keys that matter first: [server] name (unique per node: the route of its
// session ids), [cluster.membership] type ("multicast" on a LAN, "static"
// with a list of peers elsewhere), [cluster.manager] mode ("delta": every
// node holds every session; "backup": an owner and one backup per session,
// for larger clusters) and replication ("sync": a response leaves only once
// the other copies hold its change; "ack"; "async": fastest, a crash may lose
// the last change).
//
// Node.Health serves /healthz, /readyz (200 once the node holds the
// cluster's sessions) and /livez for the application's listener; Node.Admin
// serves /cluster/status, /cluster/sessions and /metrics for a listener of
// their own (admin.Listen, admin.RequireToken); Node.Stop drains and leaves. To test a program's handlers against a cluster without a network,
// start its nodes on package clustertest's in-memory network with
// WithCluster, as the package example does.
//
// What a node is made of, each its own package: membership (who is in the
// cluster: multicast heartbeats or a static list), sender and receiver (the
// TCP transport), cluster (membership and transport together, with
// request/response), manager (the session store and its two modes), valve
// (the net/http middleware) and admin (status, health and metrics
// endpoints). The configuration, package conf, is read here and in the
// commands only; each part has a Config of its own with a Default…()
// constructor, and Start translates one into the others.
package flock

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/fdlimit"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
	"github.com/flockhq/flock/valve"
)

// Node is a running flock node: its cluster, its session manager and the
// middleware that gives requests their sessions.
type Node struct {
	cluster *cluster.Cluster
	manager *manager.Manager
	valve   *valve.Valve
	mtype   string
	keys    *keyring.Keyring // nil without a key
}

// Option changes how Start builds a Node.
type Option func(*options)

type options struct {
	log     logrus.FieldLogger
	cluster *cluster.Cluster
	events  []func(membership.Event)
}

// WithLogger sends the node's logs to log instead of discarding them.
func WithLogger(log logrus.FieldLogger) Option { return func(o *options) { o.log = log } }

// WithCluster runs the node on a cluster built elsewhere (a node of
// clustertest's in-memory network, or a cluster on a transport of the
// user's own) instead of the one the configuration describes. The node
// starts and stops it.
func WithCluster(c *cluster.Cluster) Option { return func(o *options) { o.cluster = c } }

// WithMemberEvents has f called with every change of membership (joined,
// left, failed, rejoined, and conflict: another live process holds this
// node's name), in order, on the cluster's event goroutine: f must
// return quickly.
func WithMemberEvents(f func(membership.Event)) Option {
	return func(o *options) { o.events = append(o.events, f) }
}

// Start builds a node from cfg, joins the cluster and begins to fetch the
// cluster's sessions (Ready is closed when it holds them). It fails on an
// invalid cfg, naming each bad key.
func Start(ctx context.Context, cfg conf.Config, opts ...Option) (*Node, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	p, err := parts(cfg)
	if err != nil {
		return nil, fmt.Errorf("flock: %w", err)
	}
	p.cluster.Logger, p.manager.Logger, p.valve.Logger = o.log, o.log, o.log
	// The cluster port gets its share of the file descriptors and no more:
	// idle connections to it must not starve the application's listener.
	rc := &p.cluster.Receiver
	rc.MaxConns = fdlimit.Split(fdlimit.Current(), rc.MaxConns).Cluster
	rc.MaxConnsPerIP = min(rc.MaxConnsPerIP, rc.MaxConns)
	c := o.cluster
	if c == nil {
		if c, err = cluster.New(ctx, p.cluster); err != nil {
			return nil, fmt.Errorf("flock: %w", err)
		}
	}
	for _, f := range o.events {
		c.Subscribe(f)
	}
	m, err := manager.New(c, p.manager)
	if err == nil {
		err = c.Start(ctx)
	}
	if err == nil {
		err = m.Start(ctx)
	}
	if err != nil {
		if m != nil {
			m.Stop(context.Background())
		}
		c.Stop(context.Background())
		return nil, fmt.Errorf("flock: %w", err)
	}
	return &Node{cluster: c, manager: m, valve: valve.New(m, p.valve), mtype: cfg.Cluster.Membership.Type, keys: p.cluster.Keyring}, nil
}

// ErrNoKeyring: keys cannot be set on a node started without a key.
var ErrNoKeyring = errors.New("this node started without a cluster key; restart it with one")

// SetKeys replaces the node's cluster keys, the first of which seals from
// now on (see package keyring for rotation). Connections opened with a key
// that is gone are closed and reopened with the new one.
func (n *Node) SetKeys(keys ...[]byte) error {
	if n.keys == nil {
		return ErrNoKeyring
	}
	return n.keys.Set(keys...)
}

// KeyIDs are the public ids of the node's keys, the sealing one first; nil
// without a keyring.
func (n *Node) KeyIDs() []keyring.ID {
	if n.keys == nil {
		return nil
	}
	return n.keys.IDs()
}

// Wrap gives the requests of h their sessions: inside h, Session and
// Existing find them. What a request changed is replicated when its
// response commits (its first Write or WriteHeader, or h's return), before a
// byte of it leaves.
func (n *Node) Wrap(h http.Handler) http.Handler { return n.valve.Wrap(h) }

// Ready is closed once the node holds the cluster's sessions (or the state
// transfer gave up); a load balancer should not send it users before.
func (n *Node) Ready() <-chan struct{} { return n.manager.Ready() }

// Admin serves the admin endpoints: GET /cluster/status, /cluster/sessions,
// /metrics and the health paths. Serve it on a listener of its own
// ([server] admin, loopback by default: see admin.Listen), never on the
// application's, and behind admin.RequireToken with [server] admin_token
// when that listener is not loopback.
func (n *Node) Admin() *http.ServeMux { return admin.NewMux(n, n.mtype) }

// NewServer is an http.Server for h with every limit set: a client that
// trickles its request, never reads its response, or keeps an idle
// connection cannot hold the server's goroutines and file descriptors for
// long (read 30 s, write 60 s, idle 2 min, header within 10 s), and a
// request's header is at most 64 KiB. http.ListenAndServe sets none of
// these. Adjust the fields before serving if a handler needs longer.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// Health serves GET /healthz, /readyz and /livez, and nothing else: mount
// it on the application's listener for load balancers and orchestrators.
func (n *Node) Health() http.Handler { return admin.Health(n) }

// CatchingUp reports whether the node is bringing its copies up to date
// after a stall of its own (Admin's /healthz answers 503 meanwhile).
func (n *Node) CatchingUp() bool { return n.manager.CatchingUp() }

// Cluster is the node's cluster.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Manager is the node's session manager, for listeners and statistics.
func (n *Node) Manager() *manager.Manager { return n.manager }

// Drain tells the other members that this node is shutting down, so that
// they take over the routes of the users a balancer moves to them at once
// (in backup mode its sessions pass to their backups); the node still
// serves and replicates. Call it first when
// the process is asked to stop, then report not ready, then Stop.
func (n *Node) Drain(ctx context.Context) error { return n.manager.Drain(ctx) }

// Stop replicates what is still queued, leaves the cluster and ends every
// goroutine of the node, waiting at most until ctx ends. Stop the HTTP
// server first, so that no request is still changing sessions.
func (n *Node) Stop(ctx context.Context) error {
	return errors.Join(n.manager.Stop(ctx), n.cluster.Stop(ctx))
}

// The node as admin's endpoints see it.

// Local is the member this node is.
func (n *Node) Local() membership.Member { return n.cluster.Local() }

// Members are the other members as this node sees them.
func (n *Node) Members() []membership.Status { return n.cluster.Members() }

// MembershipStats are the membership service's counters.
func (n *Node) MembershipStats() membership.Stats { return n.cluster.Stats().Membership }

// TransportStats are the sender's per-peer and the receiver's counters.
func (n *Node) TransportStats() ([]sender.PeerStats, receiver.Stats) {
	st := n.cluster.Stats()
	return st.Peers, st.Receiver
}

// Sessions describes the sessions this node holds, never their values or
// ids (see manager.Ref).
func (n *Node) Sessions() []manager.Info { return n.manager.Sessions() }

// SessionInfo describes the session of id, if this node holds it.
func (n *Node) SessionInfo(id string) (manager.Info, bool) { return n.manager.SessionInfo(id) }

// ManagerStats are the session manager's counters.
func (n *Node) ManagerStats() manager.Stats { return n.manager.Stats() }

// ReplicationHistogram is how long commits took to replicate.
func (n *Node) ReplicationHistogram() (buckets []float64, counts []uint64, sum float64, count uint64) {
	return n.manager.ReplicationHistogram()
}

var _ admin.Node = (*Node)(nil)
