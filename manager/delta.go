package manager

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/membership"
)

// deltaPlacement is delta mode (Tomcat's DeltaManager): every node holds
// every session, so a change goes to every member and any node can serve
// any session. It keeps no state of its own.
type deltaPlacement struct{ m *Manager }

var _ placement = (*deltaPlacement)(nil)

// start is the state transfer: the oldest member streams all its sessions,
// installed batch by batch as they arrive; changes that arrive meanwhile
// are kept by version, so nothing stops while it runs.
func (p *deltaPlacement) start(ms []membership.Member) {
	m := p.m
	from := oldest(ms)
	m.transfer.set("running")
	start := m.clock.Now()
	log := m.log.WithField("member", from.Name)
	log.Info("state transfer started")
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.StateTransferTimeout)
	defer cancel()
	n, err := m.pull(ctx, from, "")
	if m.ctx.Err() != nil {
		return
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		m.stats.timeouts.Add(1)
		m.transfer.set("timed out")
		log.WithFields(logrus.Fields{"sessions": n, "timeout": m.cfg.StateTransferTimeout}).Warn("state transfer timed out; serving what arrived")
	case err != nil:
		m.stats.timeouts.Add(1)
		m.transfer.set("failed")
		log.WithError(err).Warn("state transfer request failed; serving what arrives by replication")
	default:
		d := m.clock.Now().Sub(start)
		m.stats.transferSessions.Add(uint64(n))
		m.stats.transferNanos.Store(uint64(d))
		m.transfer.set("done")
		log.WithFields(logrus.Fields{"sessions": n, "took": d.Round(time.Millisecond)}).Info("state transfer done")
	}
}

func (p *deltaPlacement) members(membership.Event, []membership.Member) {}

// load: while the state transfer runs, a session this node lacks is
// fetched instead of being reported missing.
func (p *deltaPlacement) load(ctx context.Context, id string) {
	m := p.m
	if m.transferred() || m.holds(id) {
		return
	}
	if err := p.fetchOne(ctx, id); err != nil {
		m.log.WithField("session", short(id)).WithError(err).Debug("fetch during state transfer failed")
	}
}

// fetchOne fetches one session during state transfer: from the node its
// route names, else from the oldest member.
func (p *deltaPlacement) fetchOne(ctx context.Context, id string) error {
	m := p.m
	// Right after the start the others may not be known yet: wait for them
	// as the state transfer does, not take the session for unknown.
	ms := m.awaitMembers(ctx, m.ready, nil)
	if len(ms) == 0 {
		return nil
	}
	from := oldest(ms)
	for _, mb := range ms {
		if mb.Name == Route(id) {
			from = mb
		}
	}
	if _, err := m.fetch(ctx, from, []string{id}); err != nil {
		return err
	}
	m.stats.fetched.Add(1)
	return nil
}

// targets: every member.
func (p *deltaPlacement) targets(string) plan { return plan{to: p.m.members()} }

func (p *deltaPlacement) committing(string, plan)                {}
func (p *deltaPlacement) committed(context.Context, delta, plan) {}
func (p *deltaPlacement) renamed(string, string, bool)           {}
func (p *deltaPlacement) gone(string)                            {}
func (p *deltaPlacement) renamedAway(string) []string            { return nil }
func (p *deltaPlacement) period() time.Duration                  { return 0 }
func (p *deltaPlacement) step(time.Time)                         {}
func (p *deltaPlacement) repairFrom(_ string, sender membership.Member) membership.Member {
	return sender // it had the version this node lacks
}
