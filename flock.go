// Package flock is a cluster manager for replicated HTTP sessions: the
// Cluster built here ties membership and transport together from one
// configuration, and the session manager (package manager) runs on top.
package flock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
)

// Cluster is one node's view of and voice in its cluster.
type Cluster struct {
	cfg     conf.Config
	log     logrus.FieldLogger
	members membership.Service

	mu       sync.Mutex
	listener net.Listener
}

// Option changes how New builds a Cluster.
type Option func(*options)

type options struct {
	log        logrus.FieldLogger
	membership membership.Service
}

// WithLogger sends the cluster's logs to log instead of discarding them.
func WithLogger(log logrus.FieldLogger) Option { return func(o *options) { o.log = log } }

// WithMembership replaces the membership service the configuration names,
// for tests and for users who bring their own.
func WithMembership(m membership.Service) Option { return func(o *options) { o.membership = m } }

// New builds a Cluster from cfg. It binds the receiver's port (with
// auto-bind) so that the address it advertises is really this node's; the
// cluster does not announce itself until Start.
func New(ctx context.Context, cfg conf.Config, opts ...Option) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flock: config: %w", err)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.log = l
	}
	c := &Cluster{cfg: cfg, log: o.log}

	host, err := netip.ParseAddr(cfg.Cluster.Receiver.Host)
	if err != nil {
		return nil, fmt.Errorf("flock: cluster.receiver.host: %w", err)
	}
	l, err := receiver.Listen(ctx, host, cfg.Cluster.Receiver.Port, cfg.Cluster.Receiver.AutoBind)
	if err != nil {
		return nil, fmt.Errorf("flock: %w", err)
	}
	c.listener = l

	c.members = o.membership
	if c.members == nil {
		local := membership.Member{
			Name:   cfg.Server.Name,
			Domain: cfg.Cluster.Domain,
			Addr:   l.Addr().(*net.TCPAddr).AddrPort(),
		}
		c.members, err = newMembership(cfg.Cluster.Membership, local, o.log)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("flock: %w", err)
		}
	}
	return c, nil
}

func newMembership(mc conf.Membership, local membership.Member, log logrus.FieldLogger) (membership.Service, error) {
	switch mc.Type {
	case "multicast":
		group, err := netip.ParseAddr(mc.Address)
		if err != nil {
			return nil, fmt.Errorf("cluster.membership.address: %w", err)
		}
		bind, err := netip.ParseAddr(mc.Bind)
		if err != nil {
			return nil, fmt.Errorf("cluster.membership.bind: %w", err)
		}
		c := membership.DefaultMulticastConfig()
		c.Group = netip.AddrPortFrom(group, uint16(mc.Port))
		c.Interface = bind
		c.TTL = mc.TTL
		c.Frequency = mc.Frequency.Duration
		c.DropTime = mc.DropTime.Duration
		c.Logger = log
		return membership.NewMulticast(local, c)
	}
	return nil, fmt.Errorf("cluster.membership.type %q has no implementation", mc.Type)
}

// Start announces this node to the cluster.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.members.Start(ctx); err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	return nil
}

// Stop tells the cluster this node leaves and releases its resources.
func (c *Cluster) Stop(ctx context.Context) error {
	err := c.members.Stop(ctx)
	c.mu.Lock()
	if c.listener != nil {
		err = errors.Join(err, c.listener.Close())
		c.listener = nil
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("flock: stop: %w", err)
	}
	return nil
}

// Local is the member this node announces.
func (c *Cluster) Local() membership.Member { return c.members.Local() }

// Members is a snapshot of the other members.
func (c *Cluster) Members() []membership.Status { return c.members.Members() }

// Events delivers membership changes; see membership.Service.
func (c *Cluster) Events() <-chan membership.Event { return c.members.Events() }

// MembershipStats returns the membership service's counters, or zeros if
// it keeps none.
func (c *Cluster) MembershipStats() membership.Stats {
	if s, ok := c.members.(interface{ Stats() membership.Stats }); ok {
		return s.Stats()
	}
	return membership.Stats{}
}

// Domain is the cluster domain this node belongs to.
func (c *Cluster) Domain() string { return c.cfg.Cluster.Domain }
