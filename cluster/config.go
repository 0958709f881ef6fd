package cluster

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
	"github.com/flockhq/flock/tlsid"
)

// Config configures a Cluster built by New.
type Config struct {
	// Name is this node's name, unique in the cluster: the route of the
	// session ids it creates.
	Name string
	// Domain separates clusters that share a network: members of another
	// domain are ignored.
	Domain string
	// Zone is where the node runs (see membership.Member.Zone); "" for
	// none.
	Zone string
	// Host, Port and AutoBind say where the receiver listens: the first
	// free port of Port, Port+1, ... Port+AutoBind-1 on Host (Tomcat's
	// auto-bind).
	Host     netip.Addr
	Port     int
	AutoBind int
	// Sender and Receiver configure the TCP transport; their Local,
	// OnFailure, Observer and Logger are set by New.
	Sender   sender.Config
	Receiver receiver.Config
	// Membership builds the membership service: Multicast, Static or
	// Gossip.
	Membership MembershipFunc
	// Keyring, if set, authenticates and encrypts everything the node
	// sends to or accepts from other nodes: heartbeats and connections.
	// Every member needs a key of the same ring.
	Keyring *keyring.Keyring
	// Insecure allows a receiver on a non-loopback address without a
	// Keyring: the network is trusted. Without it such a node is refused.
	Insecure bool
	// TLS, if set, runs every connection between nodes over mutual TLS
	// 1.3 with this identity; its certificate must name the node (Name).
	TLS    *tlsid.Identity
	Logger logrus.FieldLogger
}

// DefaultConfig returns the defaults of conf/server.toml: node1 of domain
// "default", the receiver on 127.0.0.1:4000 and the next 99 ports, multicast
// membership on loopback.
func DefaultConfig() Config {
	return Config{
		Name:       "node1",
		Domain:     "default",
		Host:       netip.MustParseAddr("127.0.0.1"),
		Port:       4000,
		AutoBind:   100,
		Sender:     sender.DefaultConfig(),
		Receiver:   receiver.DefaultConfig(),
		Membership: Multicast(membership.DefaultMulticastConfig()),
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("a node name is required"))
	}
	if c.Domain == "" {
		errs = append(errs, errors.New("a domain is required"))
	}
	if !c.Host.IsValid() {
		errs = append(errs, errors.New("a receiver host address is required"))
	}
	errs = append(errs, receiver.CheckPorts(c.Port, c.AutoBind))
	if c.Host.IsValid() && !c.Host.IsLoopback() && c.Keyring == nil && !c.Insecure {
		errs = append(errs, fmt.Errorf("the receiver host %v is not loopback, and there is no keyring: "+
			"anyone who reaches that network could read and change every session (set Keyring, or Insecure if the network is trusted)", c.Host))
	}
	if c.TLS != nil && !c.TLS.Has(c.Name) {
		errs = append(errs, fmt.Errorf("the TLS certificate names %q, not this node (%q)", c.TLS.Names, c.Name))
	}
	if c.Membership == nil {
		errs = append(errs, errors.New("a membership is required (cluster.Multicast or cluster.Static)"))
	}
	return errors.Join(errs...)
}

// Transport is what membership may ask of the cluster's transport: a probe
// answered by a member's process, and a goodbye.
type Transport interface {
	membership.Prober
	membership.Leaver
}

// MembershipFunc builds the membership service that announces local; tr
// reaches the other members over the cluster's transport, and env holds
// what the cluster shares with it.
type MembershipFunc func(local membership.Member, tr Transport, env Env) (membership.Service, error)

// Env is what a cluster hands the membership service it builds.
type Env struct {
	Logger logrus.FieldLogger
	// Keyring seals what membership sends on its own (multicast
	// heartbeats, gossip); nil when the cluster has none.
	Keyring *keyring.Keyring
	// Insecure is Config.Insecure: a membership with sockets of its own
	// (gossip) may then use a non-loopback address without a Keyring.
	Insecure bool
}

// Multicast is membership by multicast heartbeats. A ProbeTimeout above
// zero has a silent member probed over the transport before it is failed.
func Multicast(cfg membership.MulticastConfig) MembershipFunc {
	return func(local membership.Member, tr Transport, env Env) (membership.Service, error) {
		if cfg.Logger == nil {
			cfg.Logger = env.Logger
		}
		if cfg.Keyring == nil {
			cfg.Keyring = env.Keyring
		}
		if cfg.ProbeTimeout > 0 && cfg.Prober == nil {
			cfg.Prober = tr
		}
		return membership.NewMulticast(local, cfg)
	}
}

// Static is membership by a fixed list of peers pinged over the transport.
func Static(cfg membership.StaticConfig) MembershipFunc {
	return func(local membership.Member, tr Transport, env Env) (membership.Service, error) {
		// Static membership speaks over the transport only, which the
		// cluster keys.
		if cfg.Logger == nil {
			cfg.Logger = env.Logger
		}
		if cfg.Prober == nil {
			cfg.Prober = tr
		}
		if cfg.Leaver == nil {
			cfg.Leaver = tr
		}
		return membership.NewStatic(local, cfg)
	}
}

// Gossip is membership by gossip (hashicorp/memberlist), on its own port.
// The cluster's keyring encrypts it; the transport confirms a member gossip
// has lost track of, or that a send failed to reach, and carries the
// goodbye.
func Gossip(cfg membership.GossipConfig) MembershipFunc {
	return func(local membership.Member, tr Transport, env Env) (membership.Service, error) {
		if cfg.Logger == nil {
			cfg.Logger = env.Logger
		}
		if cfg.Keyring == nil {
			cfg.Keyring = env.Keyring
		}
		cfg.Insecure = cfg.Insecure || env.Insecure
		if cfg.TransportProbeTimeout > 0 && cfg.Prober == nil {
			cfg.Prober = tr
		}
		if cfg.Leaver == nil {
			cfg.Leaver = tr
		}
		return membership.NewGossip(local, cfg)
	}
}

var _ Transport = transport{}
