// Package node assembles a whole flock node for programs that embed flock:
// the cluster, the session manager and the valve, from one configuration.
package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

// Node is a running flock node.
type Node struct {
	Cluster *flock.Cluster
	Manager *manager.Manager
	valve   *valve.Valve
	mtype   string
}

// Start builds the node from cfg, joins the cluster and begins the state
// transfer. log may be nil (silent).
func Start(ctx context.Context, cfg conf.Config, log logrus.FieldLogger) (*Node, error) {
	mcfg, err := manager.ConfigFrom(cfg)
	if err != nil {
		return nil, err
	}
	vcfg, err := valve.ConfigFrom(cfg)
	if err != nil {
		return nil, err
	}
	mcfg.Logger, vcfg.Logger = log, log
	var opts []flock.Option
	if log != nil {
		opts = append(opts, flock.WithLogger(log))
	}
	c, err := flock.New(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	m, err := manager.New(c, mcfg)
	if err == nil {
		err = c.Start(ctx)
	}
	if err == nil {
		err = m.Start(ctx)
	}
	if err != nil {
		c.Stop(context.Background())
		return nil, fmt.Errorf("node: %w", err)
	}
	return &Node{Cluster: c, Manager: m, valve: valve.New(m, vcfg), mtype: cfg.Cluster.Membership.Type}, nil
}

// Wrap gives h sessions: see valve.Session and valve.Existing.
func (n *Node) Wrap(h http.Handler) http.Handler { return n.valve.Wrap(h) }

// Admin serves the admin endpoints (/cluster/status, /cluster/sessions,
// /healthz, /metrics when available).
func (n *Node) Admin() http.Handler {
	return admin.NewMux(admin.ClusterNode{Cluster: n.Cluster, Manager: n.Manager}, n.mtype)
}

// Stop delivers what is queued, leaves the cluster and ends every goroutine.
func (n *Node) Stop(ctx context.Context) error {
	return errors.Join(n.Manager.Stop(ctx), n.Cluster.Stop(ctx))
}
