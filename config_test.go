package flock

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/valve"
)

// TestDefaultsAgree: server.toml's defaults, translated, are every part's
// own defaults, so a program that builds a part with its Default…() gets
// what flockd gets with an empty configuration file.
func TestDefaultsAgree(t *testing.T) {
	p, err := parts(conf.Default())
	if err != nil {
		t.Fatal(err)
	}
	wantCluster := cluster.DefaultConfig()
	gotCluster := p.cluster
	wantCluster.Membership, gotCluster.Membership = nil, nil // functions: compared below by their configs
	if !reflect.DeepEqual(gotCluster, wantCluster) {
		t.Errorf("cluster:\n got %+v\nwant %+v", gotCluster, wantCluster)
	}
	if p.multicast == nil || !reflect.DeepEqual(*p.multicast, membership.DefaultMulticastConfig()) {
		t.Errorf("multicast:\n got %+v\nwant %+v", p.multicast, membership.DefaultMulticastConfig())
	}
	if !reflect.DeepEqual(p.manager, manager.DefaultConfig()) {
		t.Errorf("manager:\n got %+v\nwant %+v", p.manager, manager.DefaultConfig())
	}
	wantValve := valve.DefaultConfig()
	gotValve := p.valve
	if gotValve.StaticFilter.String() != wantValve.StaticFilter.String() {
		t.Errorf("valve static filter %q, want %q", gotValve.StaticFilter, wantValve.StaticFilter)
	}
	gotValve.StaticFilter, wantValve.StaticFilter = nil, nil
	if !reflect.DeepEqual(gotValve, wantValve) {
		t.Errorf("valve:\n got %+v\nwant %+v", gotValve, wantValve)
	}

	c := conf.Default()
	c.Cluster.Membership.Type = "static"
	c.Cluster.Membership.Static.Members = []string{"198.51.100.10:4000"}
	p, err = parts(c)
	if err != nil {
		t.Fatal(err)
	}
	wantStatic := membership.DefaultStaticConfig()
	if p.static == nil {
		t.Fatal("no static membership")
	}
	gotStatic := *p.static
	gotStatic.Peers = nil
	if !reflect.DeepEqual(gotStatic, wantStatic) {
		t.Errorf("static:\n got %+v\nwant %+v", gotStatic, wantStatic)
	}

	c = conf.Default()
	c.Cluster.Membership.Type = "gossip"
	if p, err = parts(c); err != nil {
		t.Fatal(err)
	}
	if p.gossip == nil || !reflect.DeepEqual(*p.gossip, membership.DefaultGossipConfig()) {
		t.Errorf("gossip:\n got %+v\nwant %+v", p.gossip, membership.DefaultGossipConfig())
	}
}

// TestRulesWrittenOnce: each rule that ties two keys together is the part's
// own (a Check… function the part applies to its Config), and conf applies
// that same function, so over the values around each boundary conf refuses
// exactly what the part refuses.
func TestRulesWrittenOnce(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	type rule struct {
		name string
		key  string // the key conf names when it refuses
		// set writes the values into a conf.Config; part is the part's
		// verdict on the same values.
		cases [][2]int
		set   func(c *conf.Config, a, b int)
		part  func(a, b int) error
	}
	rules := []rule{
		{
			name: "drop_time at least twice frequency", key: "cluster.membership.drop_time",
			cases: [][2]int{{500, 999}, {500, 1000}, {500, 1001}, {100, 199}, {100, 200}, {3000, 3000}},
			set: func(c *conf.Config, f, d int) {
				c.Cluster.Membership.Frequency.Duration, c.Cluster.Membership.DropTime.Duration = ms(f), ms(d)
				c.Cluster.Membership.ProbeTimeout.Duration = 0
			},
			part: func(f, d int) error { return membership.CheckTiming(ms(f), ms(d)) },
		},
		{
			name: "probe within drop_time", key: "cluster.membership.probe_timeout",
			cases: [][2]int{{2999, 3000}, {3000, 3000}, {3001, 3000}, {1, 1000}, {1001, 1000}},
			set: func(c *conf.Config, p, d int) {
				c.Cluster.Membership.Frequency.Duration = ms(100)
				c.Cluster.Membership.ProbeTimeout.Duration, c.Cluster.Membership.DropTime.Duration = ms(p), ms(d)
			},
			part: func(p, d int) error { return membership.CheckProbe(ms(p), ms(d)) },
		},
		{
			name: "auto-bind ports within 65535", key: "cluster.receiver.auto_bind",
			cases: [][2]int{{65436, 100}, {65437, 100}, {65535, 1}, {65535, 2}, {4000, 100}},
			set: func(c *conf.Config, port, n int) {
				c.Cluster.Receiver.Port, c.Cluster.Receiver.AutoBind = port, n
			},
			part: func(port, n int) error { return receiver.CheckPorts(port, n) },
		},
		{
			name: "touch_interval within session_timeout", key: "cluster.manager.touch_interval",
			cases: [][2]int{{5000, 60000}, {15000, 60000}, {15001, 60000}, {30000, 60000}},
			set: func(c *conf.Config, touch, timeout int) {
				c.Cluster.Manager.TouchInterval.Duration, c.Cluster.Manager.SessionTimeout.Duration = ms(touch), ms(timeout)
			},
			part: func(touch, timeout int) error { return manager.CheckTouch(ms(touch), ms(timeout)) },
		},
		{
			name: "SameSite=None only with Secure", key: "session.cookie_same_site",
			cases: [][2]int{{int(http.SameSiteNoneMode), 0}, {int(http.SameSiteNoneMode), 1}, {int(http.SameSiteLaxMode), 0}, {int(http.SameSiteStrictMode), 1}},
			set: func(c *conf.Config, mode, secure int) {
				c.Session.CookieSameSite = map[http.SameSite]string{http.SameSiteNoneMode: "None", http.SameSiteLaxMode: "Lax", http.SameSiteStrictMode: "Strict"}[http.SameSite(mode)]
				c.Session.CookieSecure = secure == 1
			},
			part: func(mode, secure int) error { return valve.CheckSameSite(http.SameSite(mode), secure == 1) },
		},
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			refused := 0
			for _, v := range r.cases {
				c := conf.Default()
				r.set(&c, v[0], v[1])
				err := c.Validate()
				confRefuses := err != nil && strings.Contains(err.Error(), r.key)
				partRefuses := r.part(v[0], v[1]) != nil
				if confRefuses != partRefuses {
					t.Errorf("%v: conf refuses %v (%v), the part refuses %v", v, confRefuses, err, partRefuses)
				}
				if partRefuses {
					refused++
				}
			}
			if refused == 0 || refused == len(r.cases) {
				t.Errorf("the cases do not straddle the boundary: %d of %d refused", refused, len(r.cases))
			}
		})
	}
}
