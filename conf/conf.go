// Package conf reads a flock node's configuration file, server.toml.
//
// Parse starts from [Default], lays the file on top and validates the result,
// so a key missing from the file keeps its default and a Config returned
// without error is ready to use: every address in it parses and every number
// is in range. Problems are reported all at once, each prefixed with
// file:line: and naming its dotted key, because the person reading them is
// fixing a file and should not have to restart flockd once per mistake.
//
// To add a key: add the field with its toml tag, give it a default in
// [Default], check it in Config.problems, and document it in server.toml.
// The tests fail until all four agree.
package conf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the configuration of one flock node. It holds a slice
// (cluster.membership.static.members), so it cannot be compared with ==;
// use reflect.DeepEqual.
type Config struct {
	Server  Server  `toml:"server"`
	Cluster Cluster `toml:"cluster"`
	Session Session `toml:"session"`
}

// Server configures the node itself.
type Server struct {
	// Name is unique per node. It becomes the route suffix of session ids
	// ("<id>.<name>"), which is why it may not contain dots.
	Name string `toml:"name"`
	// HTTP is the host:port the node serves HTTP on. The host may be empty
	// (all interfaces), an IP address or a hostname.
	HTTP string `toml:"http"`
	// Admin is the host:port of the admin endpoints (status, sessions,
	// metrics, the page). They are never on HTTP's listener, which serves
	// only the application and health. Loopback by default, so that only
	// the machine itself reaches them; "off" serves none. If the port is
	// taken (a second node on the machine), the next free one of the
	// following 99 is used and logged.
	Admin string `toml:"admin"`
	// AdminToken, if set, is required as "Authorization: Bearer <token>"
	// by every admin endpoint but health. Set it whenever Admin is not a
	// loopback address: flockd warns at start when it is not.
	AdminToken string `toml:"admin_token"`
	// Pprof serves Go's profiles (net/http/pprof) under /debug/pprof/ on
	// the admin listener, behind AdminToken like every admin endpoint: a
	// CPU profile of a loaded node is how its costs are found.
	Pprof bool `toml:"pprof"`
	// Zone is where the node runs (a rack, an availability zone). In
	// backup mode a session's backup is on a member of another zone when
	// there is one, so losing a zone loses no session. Empty: no zone.
	// Set it only once every node runs a release that reads zones
	// (earlier ones refuse heartbeats that carry one).
	Zone string `toml:"zone"`
	// LogLevel is the least severe level logged: "debug", "info", "warn"
	// or "error".
	LogLevel string `toml:"log_level"`
	// LogFormat is "text" (for people) or "json" (for log collectors).
	LogFormat string `toml:"log_format"`
	// DrainTimeout bounds a graceful shutdown: requests in flight and
	// unacknowledged replication get this long before the node leaves.
	DrainTimeout Duration `toml:"drain_timeout"`
	// DrainGrace comes first on SIGTERM: the node answers /healthz and
	// /readyz 503 and keeps serving everything else, so that load
	// balancers move its users away before its listener closes. At least
	// the balancer's check interval times its fall count.
	DrainGrace Duration `toml:"drain_grace"`
}

// Cluster configures how the node finds and talks to its peers.
type Cluster struct {
	// Domain separates clusters sharing a network: members of another
	// domain are ignored.
	Domain     string     `toml:"domain"`
	Membership Membership `toml:"membership"`
	Receiver   Receiver   `toml:"receiver"`
	Sender     Sender     `toml:"sender"`
	Manager    Manager    `toml:"manager"`
	Security   Security   `toml:"security"`
	TLS        TLS        `toml:"tls"`
}

// TLS, where users bring certificates, runs every connection between nodes
// over mutual TLS 1.3: each node holds a certificate from the cluster's CA
// that names it (a DNS name, or else the common name, equal to its name),
// and a caller's certificate must name the member it says it is. It adds to
// the keyring, which heartbeats still need; flockctl tls-ca and tls-cert
// make a small CA for clusters that have none.
type TLS struct {
	Cert string `toml:"cert"` // PEM certificate (chain) of this node
	Key  string `toml:"key"`  // its PEM private key
	CA   string `toml:"ca"`   // PEM bundle of the CA that signs every member's certificate
}

// Enabled reports whether any of the files is set.
func (t TLS) Enabled() bool { return t.Cert != "" || t.Key != "" || t.CA != "" }

// Security configures the cluster keyring: with a key, every heartbeat and
// every connection between nodes is authenticated and encrypted, and a host
// without the key can neither read nor change anything.
type Security struct {
	// Keys are the cluster's keys, base64, 32 bytes each (flockctl keygen
	// prints one). The first seals; every one opens, so keys rotate with
	// no downtime: add the new key everywhere, make it first everywhere,
	// remove the old one (flockd rereads them on SIGHUP).
	Keys []string `toml:"keys" example:"<base64 key from flockctl keygen>"`
	// KeyFile, instead of Keys, names a file with one base64 key a line
	// (blank lines and lines starting with # are skipped), so the keys stay
	// out of the configuration. Use [Security.LoadKeys] to read it.
	KeyFile string `toml:"key_file"`
	// Insecure declares the network trusted: a node whose receiver or
	// heartbeats use a non-loopback address starts without a key only
	// when it is set, and warns at start.
	Insecure bool `toml:"insecure"`
	// MaxClockSkew is how far apart the nodes' clocks may be: a sealed
	// heartbeat sent longer ago (or later) than this is refused as a
	// replay.
	MaxClockSkew Duration `toml:"max_clock_skew"`
}

// Membership configures how members discover each other and notice when one
// has gone.
//
// Address, Port, Bind and TTL configure the multicast heartbeats; they are
// validated whatever the type, as they have working defaults.
type Membership struct {
	Type      string   `toml:"type"`      // "multicast", "static", "dns" or "gossip"
	Address   string   `toml:"address"`   // multicast group of the heartbeats
	Port      int      `toml:"port"`      // UDP port of the group
	Bind      string   `toml:"bind"`      // IP of the interface that carries heartbeats
	Frequency Duration `toml:"frequency"` // heartbeat interval
	DropTime  Duration `toml:"drop_time"` // silence after which a member is dropped
	// ProbeTimeout is how long a member that has gone silent gets to answer
	// a TCP ping before it is dropped (Tomcat's TcpFailureDetector). Zero
	// turns the ping off. At most DropTime.
	ProbeTimeout Duration `toml:"probe_timeout"`
	TTL          int      `toml:"ttl"` // multicast time-to-live
	Static       Static   `toml:"static"`
	DNS          DNS      `toml:"dns"`
	Gossip       Gossip   `toml:"gossip"`
}

// Gossip configures membership type "gossip" (hashicorp/memberlist: SWIM
// with Lifeguard), on a TCP and UDP port of its own. Frequency and
// drop_time set its failure detection (probe interval = frequency,
// suspicion = drop_time/frequency - 2 probe intervals), probe_timeout the
// TCP confirmation of a member a send failed to reach. Seeds are joined at
// start, retried until one answers, and again every dns.interval when they
// are not members; if dns.name is set, the addresses it resolves to (at
// dns.port, 0: this node's gossip port) are seeds too.
type Gossip struct {
	// Bind is the IP:port of gossip's sockets. 0.0.0.0 or :: needs
	// Advertise.
	Bind string `toml:"bind"`
	// Advertise is the IP:port the other members reach Bind at (NAT,
	// containers); "" is Bind. Use [Gossip.Addrs] to read both.
	Advertise string `toml:"advertise"`
	// Seeds are the gossip addresses of members to join through, IP:port
	// or host:port each. This node's own may be listed. Use
	// [Gossip.SeedAddrs] to read them.
	Seeds []string `toml:"seeds" example:"198.51.100.10:7946"`
}

// DNS configures membership type "dns": the peers are what a DNS name
// resolves to, asked again every Interval, and pinged over TCP as static
// members are. A name with no records is a cluster of one for now (the
// first node of a cluster finds nobody). Static members, if any, are
// peers too.
type DNS struct {
	// Name is looked up for addresses, each a peer at Port; in
	// Kubernetes, a headless Service with publishNotReadyAddresses.
	Name string `toml:"name" example:"flock.default.svc.cluster.local"`
	// Port of the peers' receivers; 0 is this node's receiver port.
	Port int `toml:"port"`
	// SRV looks Name up as a SRV name: the peers are its targets at their
	// ports (Port is not used).
	SRV bool `toml:"srv"`
	// Interval is how often the name is looked up again.
	Interval Duration `toml:"interval"`
	// Server is the DNS server to ask, "IP:port"; "" asks the system's.
	Server string `toml:"server"`
}

// Static lists the members of a cluster whose membership type is "static".
type Static struct {
	// Members are the receivers of all nodes, "IP:port" or "host:port"
	// each, such as "198.51.100.10:4000" or "flock-0.flock:4000" (a host
	// name is looked up at start and every cluster.membership.dns.interval).
	// The node's own receiver may be listed; it is skipped. Required with
	// type "static", ignored (but still checked) with "multicast". Use
	// [Static.Addrs] to read them.
	Members []string `toml:"members" example:"198.51.100.10:4000"`
}

// Receiver configures the TCP listener that peers replicate sessions to.
type Receiver struct {
	// Host is the address peers connect to; it is advertised in heartbeats,
	// so it must be an address of this node that peers can reach.
	Host string `toml:"host"`
	// Port is the first port tried. If it is taken the receiver tries
	// Port+1, ..., Port+AutoBind-1, so several nodes can share one host
	// and one configuration.
	Port     int `toml:"port"`
	AutoBind int `toml:"auto_bind"`
	// MaxFrame is the largest frame accepted; a larger one closes the
	// connection.
	MaxFrame Size `toml:"max_frame"`
	// IdleTimeout closes a connection silent this long; the sender
	// reconnects when it next needs to.
	IdleTimeout Duration `toml:"idle_timeout"`
}

// Sender configures how messages are sent to peers' receivers.
type Sender struct {
	// Timeout is how long a send waits for a connection and, in the ack
	// and sync modes, for its acknowledgement.
	Timeout Duration `toml:"timeout"`
	// MaxRetries is how many times a message is re-sent after a reconnect
	// (Tomcat's maxRetryAttempts).
	MaxRetries int `toml:"max_retries"`
	// QueueLimit bounds the bytes waiting per peer, queued or not yet
	// acknowledged; a send past it fails at once.
	QueueLimit Size `toml:"queue_limit"`
}

// Manager configures the session manager: where sessions are kept, when
// they expire and when a response that changed one may be sent.
type Manager struct {
	// Mode is how sessions are spread over the nodes. Only "delta" is
	// available: every node holds every session (Tomcat's DeltaManager).
	Mode string `toml:"mode"`
	// Placement is where backup mode keeps a session's backup:
	// "rendezvous" (spread by a hash of the session id, zone-aware) or
	// "ring" (the next node by name, as releases before it did: keep it
	// while rolling a backup-mode cluster up from one of them, then
	// switch).
	Placement string `toml:"placement"`
	// SessionTimeout expires a session unused this long.
	SessionTimeout Duration `toml:"session_timeout"`
	// SessionLifetime expires a session this long after it was created,
	// however busy (scs's Lifetime); zero means no bound, only the idle
	// timeout.
	SessionLifetime Duration `toml:"session_lifetime"`
	// MaxActive is how many sessions this node may hold; creating one more
	// is refused (HTTP 503). Zero means no limit. With MaxSessionSize it
	// bounds the memory sessions can take.
	MaxActive int `toml:"max_active"`
	// MaxSessionSize bounds one session's attributes (keys and encoded
	// values); a Set past it fails. Half of receiver.max_frame is the
	// bound if that is less: a session is replicated in one frame.
	MaxSessionSize Size `toml:"max_session_size"`
	// Replication is when a response that changed a session may commit:
	// "async" at once, "ack" when the members have received the change,
	// "sync" when they have applied it.
	Replication string `toml:"replication"`
	// StateTransferTimeout is how long a joining node waits for the
	// sessions of the others. Zero means it does not wait.
	StateTransferTimeout Duration `toml:"state_transfer_timeout"`
	// AlwaysSave replicates the whole session after every request, for
	// handlers that change session values without calling Set (Resin's
	// always-save-session).
	AlwaysSave bool `toml:"always_save"`
	// NotifyListenersOnReplication makes session listeners fire also for
	// changes that arrive from other nodes.
	NotifyListenersOnReplication bool `toml:"notify_listeners_on_replication"`
	// ExpireInterval is how often the expiry sweep runs.
	ExpireInterval Duration `toml:"expire_interval"`
	// TouchInterval is how often last-access times are sent to the other
	// nodes, in one batch. At most a quarter of SessionTimeout, so that no
	// copy expires while the session is in use on another node.
	TouchInterval Duration `toml:"touch_interval"`
	// SyncMinCopies is how many other members must have applied a change
	// for a request in replication "sync" to succeed (at most the members
	// there are); fewer, and the request is answered 503.
	SyncMinCopies int `toml:"sync_min_copies"`
	// AntiEntropyInterval is how often the node compares its copies with
	// one other member, in turn, and exchanges what differs; "0s" turns
	// the background rounds off (a member that comes back is still
	// brought up to date at once).
	AntiEntropyInterval Duration `toml:"anti_entropy_interval"`
	// PersistDir, if set, is where the node keeps the sessions it changes
	// (an append-only log), so that a restart under the same name recovers
	// them; "" keeps sessions in memory only (the backup carries them).
	PersistDir string `toml:"persist_dir"`
}

// Session configures the session cookie and which requests use sessions.
type Session struct {
	// CookieName is the cookie's name, an RFC 6265 token.
	CookieName string `toml:"cookie_name"`
	// CookiePath is the cookie's Path attribute; it starts with "/".
	CookiePath string `toml:"cookie_path"`
	// CookieDomain is the cookie's Domain attribute; empty leaves it out,
	// so that the cookie goes back to the host that set it only.
	CookieDomain string `toml:"cookie_domain"`
	// CookieSecure sends the cookie over HTTPS only.
	CookieSecure bool `toml:"cookie_secure"`
	// CookieHTTPOnly hides the cookie from scripts.
	CookieHTTPOnly bool `toml:"cookie_http_only"`
	// CookieSameSite is the cookie's SameSite attribute: "Lax", "Strict",
	// "None" (which needs CookieSecure) or "" for no attribute. Use
	// [Session.SameSite] to read it.
	CookieSameSite string `toml:"cookie_same_site"`
	// StaticFilter is a Go regular expression of request paths that never
	// touch sessions (Tomcat's ReplicationValve filter); empty means none.
	// Use [Session.Filter] to compile it.
	StaticFilter string `toml:"static_filter"`
	// CookiePersist makes every session cookie persistent (Max-Age: until
	// the session would expire) instead of a browser session cookie;
	// Session.RememberMe chooses per session.
	CookiePersist bool `toml:"cookie_persist"`
	// IDHeader, if set, is the request header that carries the session id
	// instead of the cookie (API clients, the Model Context Protocol's
	// "Mcp-Session-Id"): the id is read from it and sent back in it when a
	// session is created or renamed; no cookie is set.
	IDHeader string `toml:"id_header"`
}

// Duration is a time.Duration written in TOML as a Go duration string, such as
// "500ms" or "3s". The TOML library would otherwise accept a bare integer as
// nanoseconds, which no one means in a config file.
type Duration struct{ time.Duration }

// MarshalText implements [encoding.TextMarshaler].
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler].
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		// time's error ("time: invalid duration ...") repeats the input
		// without saying what would be accepted; examples help more.
		return fmt.Errorf("%q is not a duration (examples: \"500ms\", \"2s\")", text)
	}
	d.Duration = v
	return nil
}

// Default returns the configuration used for keys missing from the file.
// The values are Tomcat's, except that heartbeats and the receiver stay on
// loopback until the user names a real interface.
func Default() Config {
	return Config{
		Server: Server{
			Name:         "node1",
			HTTP:         "127.0.0.1:8080",
			LogLevel:     "info",
			LogFormat:    "text",
			DrainTimeout: Duration{10 * time.Second},
			DrainGrace:   Duration{3 * time.Second},
			Admin:        "127.0.0.1:9090",
			AdminToken:   "",
		},
		Cluster: Cluster{
			Domain: "default",
			Membership: Membership{
				Type:         "multicast",
				Address:      "228.0.0.4",
				Port:         45564,
				Bind:         "127.0.0.1",
				Frequency:    Duration{500 * time.Millisecond},
				DropTime:     Duration{3 * time.Second},
				ProbeTimeout: Duration{time.Second},
				TTL:          1,
				// Empty rather than nil, so that the encoder writes
				// members = [] and Default() equals the shipped file.
				Static: Static{Members: []string{}},
				DNS:    DNS{Interval: Duration{5 * time.Second}},
				Gossip: Gossip{Bind: "127.0.0.1:7946", Seeds: []string{}},
			},
			Receiver: Receiver{
				Host:        "127.0.0.1",
				Port:        4000,
				AutoBind:    100,
				MaxFrame:    Size{16 * mib},
				IdleTimeout: Duration{time.Minute},
			},
			Sender: Sender{
				Timeout:    Duration{3 * time.Second},
				MaxRetries: 1,
				QueueLimit: Size{64 * mib},
			},
			Security: Security{
				Keys:         []string{}, // written as keys = [], as the shipped file does
				MaxClockSkew: Duration{30 * time.Second},
			},
			Manager: Manager{
				Mode:                         "delta",
				Placement:                    "rendezvous",
				SessionTimeout:               Duration{30 * time.Minute},
				SessionLifetime:              Duration{0},
				MaxActive:                    100_000,
				MaxSessionSize:               Size{mib},
				Replication:                  "sync",
				StateTransferTimeout:         Duration{time.Minute},
				AlwaysSave:                   false,
				NotifyListenersOnReplication: true,
				ExpireInterval:               Duration{time.Second},
				TouchInterval:                Duration{5 * time.Second},
				SyncMinCopies:                1,
				AntiEntropyInterval:          Duration{5 * time.Second},
			},
		},
		Session: Session{
			CookieName:     "FLOCKSESSIONID",
			CookiePath:     "/",
			CookieDomain:   "",
			CookieSecure:   false,
			CookieHTTPOnly: true,
			CookieSameSite: "Lax",
			StaticFilter:   `\.(css|js|png|jpe?g|gif|ico|svg|woff2?|map)$`,
			CookiePersist:  false,
			IDHeader:       "",
		},
	}
}

// Load reads the file at path and parses it with [Parse].
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("loading config: %w", err)
	}
	return Parse(data, path)
}

// Parse returns [Default] overlaid with the TOML document data, validated.
// file names the document in error messages only.
//
// The error, if any, joins one error per problem (see [errors.Join]) in file
// order: unknown keys, values of the wrong TOML type and values
// [Config.Validate] rejects. Each starts with "file:line: " when the line is
// known and names the dotted key it is about. A TOML syntax error is reported
// alone, as the library cannot read past it. On error the Config is the zero
// value, so that a half-read configuration cannot be used by mistake.
func Parse(data []byte, file string) (Config, error) {
	return ParseWith(data, file, nil)
}

// LoadWith is Load with overlay applied to the file's values before they
// are validated: the environment and the command line, which may complete
// what the file leaves out (a key in the environment of a container).
func LoadWith(path string, overlay func(*Config) error) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("loading config: %w", err)
	}
	return ParseWith(data, path, overlay)
}

// ParseWith is Parse with overlay applied before validation (see LoadWith).
func ParseWith(data []byte, file string, overlay func(*Config) error) (Config, error) {
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Config{}, at(file, syntaxLine(data, pe.Position), syntaxError{pe})
		}
		return Config{}, at(file, 0, err)
	}

	c := Default()
	probs := decodeTable(reflect.ValueOf(&c).Elem(), doc, nil)
	if overlay != nil {
		if err := overlay(&c); err != nil {
			return Config{}, err
		}
	}
	mistyped := make(map[string]bool)
	for _, p := range probs {
		if p.mistyped {
			mistyped[p.key] = true
		}
	}
	for _, p := range c.problems() {
		// A mistyped value was left at its default, which passes its own
		// check; but comparing another key against that default would
		// blame the user for a value they did not write. So would a
		// check of the key itself against another key, such as static
		// membership's need for members when members was mistyped.
		if !mistyped[p.related] && !mistyped[p.key] {
			probs = append(probs, p)
		}
	}
	if len(probs) == 0 {
		return c, nil
	}
	return Config{}, locate(probs, file, data)
}

// locate places each problem at the line of data where its key is written and
// joins them in file order.
func locate(probs []problem, file string, data []byte) error {
	lines := keyLines(string(data))
	type located struct {
		line int // 0 if unknown
		key  string
		err  error
	}
	errs := make([]located, len(probs))
	for i, p := range probs {
		line, ok := lines[p.key]
		if !ok && p.related != "" {
			// The key kept its default; the value the user wrote is the
			// one it was compared against.
			line = lines[p.related]
		}
		errs[i] = located{line, p.key, at(file, line, p.err)}
	}
	// Errors with no known line go last, after those that point into the
	// file. Keys break ties so that the order does not depend on map
	// iteration (several keys can share a line in an inline table); the
	// sort is stable so that the problems of one key, such as the
	// elements of an array, stay in the order they were found.
	slices.SortStableFunc(errs, func(a, b located) int {
		switch {
		case a.line == b.line:
			return strings.Compare(a.key, b.key)
		case a.line == 0:
			return 1
		case b.line == 0:
			return -1
		}
		return a.line - b.line
	})
	joined := make([]error, len(errs))
	for i, e := range errs {
		joined[i] = e.err
	}
	return errors.Join(joined...)
}

// at prefixes err with its place in the file, in the file:line: form that
// editors and terminals recognise. line 0 means unknown.
func at(file string, line int, err error) error {
	switch {
	case file != "" && line > 0:
		return fmt.Errorf("%s:%d: %w", file, line, err)
	case file != "":
		return fmt.Errorf("%s: %w", file, err)
	case line > 0:
		return fmt.Errorf("line %d: %w", line, err)
	}
	return err
}

// syntaxLine returns the line of a syntax error at p. When the unexpected
// character is a newline the library sometimes counts it first and reports
// the next line ("[server" followed by a newline is reported on line 2), so
// the line is recounted from the byte offset, which is exact. An offset that
// disagrees by more than that is not trusted.
func syntaxLine(data []byte, p toml.Position) int {
	if p.Start < 0 || p.Start > len(data) {
		return p.Line
	}
	line := bytes.Count(data[:p.Start], []byte("\n")) + 1
	if line != p.Line && line != p.Line-1 {
		return p.Line
	}
	return line
}

// syntaxError shortens a toml.ParseError to its message: its Error method
// starts with "toml: line N", which would repeat the file:line: prefix.
type syntaxError struct{ toml.ParseError }

func (e syntaxError) Error() string { return e.Message }
func (e syntaxError) Unwrap() error { return e.ParseError }
