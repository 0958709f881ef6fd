package conf

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/valve"
)

// membershipTypes are the values cluster.membership.type accepts. Appending
// one here (once the membership package can build it) is all it takes to
// allow it.
var membershipTypes = []string{"multicast", "static", "dns", "gossip"}

// managerModes are the values cluster.manager.mode accepts.
var managerModes = []string{"delta", "backup"}

// replicationModes are the values cluster.manager.replication accepts, from
// the fastest to the safest.
var replicationModes = []string{"async", "ack", "sync"}

// sameSiteModes map session.cookie_same_site to the cookie attribute; ""
// maps to 0, which net/http writes as no attribute.
var sameSiteModes = map[string]http.SameSite{
	"Lax":    http.SameSiteLaxMode,
	"Strict": http.SameSiteStrictMode,
	"None":   http.SameSiteNoneMode,
	"":       0,
}

const sameSiteAllowed = `"Lax", "Strict", "None" or "" (no attribute)`

const (
	maxNameLen   = 63
	maxDomainLen = 64 // the domain travels in every heartbeat
	maxFrequency = time.Minute
	maxAutoBind  = 1000

	minMaxFrame      = 1 * kib
	maxMaxFrame      = 1 * gib
	minIdleTimeout   = time.Second
	maxSendTimeout   = 10 * time.Minute
	maxMaxRetries    = 10
	minQueueLimit    = 64 * kib
	maxQueueLimit    = 16 * gib
	staticKey        = "cluster.membership.static.members"
	staticExample    = `["198.51.100.10:4000", "198.51.100.11:4000"]`
	memberAddrSyntax = `want IP:port, such as "198.51.100.10:4000" or "[2001:db8::10]:4000"`

	minSessionTimeout = time.Second
	maxSessionTimeout = 720 * time.Hour // 30 days
	// maxSessionLifetime: a year, the longest "remember me" anyone asks of
	// a cookie (browsers cap Max-Age at 400 days).
	maxSessionLifetime = 8760 * time.Hour
	minExpireInterval  = 10 * time.Millisecond
	maxExpireInterval  = time.Minute
	minTouchInterval   = 100 * time.Millisecond
)

// Validate reports every problem in c, joined with [errors.Join], each naming
// its dotted key. A Config that passes can be used without further checks:
// addresses parse (see [Membership.Group], [Membership.BindAddr],
// [Receiver.HostAddr] and [Static.Addrs]) and numbers are in range.
func (c Config) Validate() error {
	probs := c.problems()
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = p.err
	}
	return errors.Join(errs...)
}

// problems checks c in the order the keys appear in the shipped server.toml.
func (c Config) problems() []problem {
	var probs []problem
	check := func(key string, err error) {
		if err != nil {
			probs = append(probs, keyProblem(key, err))
		}
	}
	checkPair := func(key, related string, err error) {
		if err != nil {
			p := keyProblem(key, err)
			p.related = related
			probs = append(probs, p)
		}
	}

	check("server.name", checkName(c.Server.Name))
	check("server.http", checkHostPort(c.Server.HTTP))
	if c.Server.Admin != AdminOff {
		check("server.admin", checkHostPort(c.Server.Admin))
		if c.Server.Admin == c.Server.HTTP {
			checkPair("server.admin", "server.http", fmt.Errorf("%q is also server.http; the admin endpoints never share the application's listener", c.Server.Admin))
		}
	}
	check("server.admin_token", checkToken(c.Server.AdminToken))
	check("server.log_level", checkOneOf(c.Server.LogLevel, []string{"debug", "info", "warn", "error"}))
	check("server.log_format", checkOneOf(c.Server.LogFormat, []string{"text", "json"}))
	check("server.drain_timeout", checkTimeout(c.Server.DrainTimeout.Duration, 10*time.Minute))
	if g := c.Server.DrainGrace.Duration; g < 0 || g > 10*time.Minute {
		check("server.drain_grace", fmt.Errorf("%v is out of range; allowed 0s..10m", g))
	}
	check("cluster.domain", checkDomain(c.Cluster.Domain))
	if c.Server.Zone != "" {
		check("server.zone", checkDomain(c.Server.Zone))
	}

	m := c.Cluster.Membership
	check("cluster.membership.type", checkMembershipType(m.Type))
	_, err := m.group()
	check("cluster.membership.address", err)
	check("cluster.membership.port", checkPort(m.Port))
	_, err = m.bindAddr()
	check("cluster.membership.bind", err)
	freqErr := checkTimeout(m.Frequency.Duration, maxFrequency)
	check("cluster.membership.frequency", freqErr)
	// One lost heartbeat must not drop a healthy member. Compared only with
	// a valid frequency, which also keeps 2*frequency from overflowing.
	dropOK := freqErr == nil && membership.CheckTiming(m.Frequency.Duration, m.DropTime.Duration) == nil
	if freqErr == nil && !dropOK {
		checkPair("cluster.membership.drop_time", "cluster.membership.frequency",
			fmt.Errorf("%v must be at least twice frequency (%v)", m.DropTime, m.Frequency))
	}
	// The probe runs within drop_time. Compared only with a valid
	// drop_time, so that one mistake is not reported twice.
	switch pt := m.ProbeTimeout.Duration; {
	case pt < 0:
		check("cluster.membership.probe_timeout", fmt.Errorf(`%v must not be negative ("0s" turns the probe off)`, pt))
	case dropOK && pt > 0 && membership.CheckProbe(pt, m.DropTime.Duration) != nil:
		checkPair("cluster.membership.probe_timeout", "cluster.membership.drop_time",
			fmt.Errorf("%v must be at most drop_time (%v)", m.ProbeTimeout, m.DropTime))
	}
	check("cluster.membership.ttl", checkRange(m.TTL, 0, 255))

	// Members are checked whatever the type, so that a list prepared
	// before switching to "static" is known to be good.
	_, _, memberErrs := m.Static.addrs()
	for _, err := range memberErrs {
		probs = append(probs, problem{key: staticKey, err: err})
	}
	if m.Type == "static" && len(m.Static.Members) == 0 {
		checkPair(staticKey, "cluster.membership.type",
			fmt.Errorf(`type "static" needs at least one member, such as %s`, staticExample))
	}
	d := m.DNS
	switch {
	case m.Type == "dns" && d.Name == "":
		checkPair("cluster.membership.dns.name", "cluster.membership.type",
			errors.New(`type "dns" needs a name to look up, such as "flock.default.svc.cluster.local"`))
	case d.Name != "" && !isHostname(d.Name):
		check("cluster.membership.dns.name", fmt.Errorf("%q is not a host name", d.Name))
	}
	check("cluster.membership.dns.port", checkRange(d.Port, 0, 65535))
	if d.Interval.Duration < 100*time.Millisecond || d.Interval.Duration > time.Hour {
		check("cluster.membership.dns.interval", fmt.Errorf("%v is out of range; allowed 100ms..1h", d.Interval))
	}
	if d.Server != "" {
		if ap, err := netip.ParseAddrPort(d.Server); err != nil || ap.Port() == 0 {
			check("cluster.membership.dns.server", fmt.Errorf("%q is not IP:port, such as \"10.96.0.10:53\"", d.Server))
		}
	}

	r := c.Cluster.Receiver
	_, err = r.hostAddr()
	check("cluster.receiver.host", err)
	portErr := checkPort(r.Port)
	check("cluster.receiver.port", portErr)
	autoErr := checkRange(r.AutoBind, 1, maxAutoBind)
	check("cluster.receiver.auto_bind", autoErr)
	if portErr == nil && autoErr == nil {
		if last := r.Port + r.AutoBind - 1; receiver.CheckPorts(r.Port, r.AutoBind) != nil {
			checkPair("cluster.receiver.auto_bind", "cluster.receiver.port",
				fmt.Errorf("%d tries ports %d..%d; the last must be at most 65535", r.AutoBind, r.Port, last))
		}
	}
	check("cluster.receiver.max_frame", checkSize(r.MaxFrame, minMaxFrame, maxMaxFrame))
	if d := r.IdleTimeout.Duration; d < minIdleTimeout {
		check("cluster.receiver.idle_timeout", fmt.Errorf("%v is too short; allowed at least %v", d, minIdleTimeout))
	}

	sn := c.Cluster.Sender
	check("cluster.sender.timeout", checkTimeout(sn.Timeout.Duration, maxSendTimeout))
	check("cluster.sender.max_retries", checkRange(sn.MaxRetries, 0, maxMaxRetries))
	check("cluster.sender.queue_limit", checkSize(sn.QueueLimit, minQueueLimit, maxQueueLimit))

	mg := c.Cluster.Manager
	check("cluster.manager.mode", checkManagerMode(mg.Mode))
	check("cluster.manager.placement", checkOneOf(mg.Placement, []string{"rendezvous", "ring"}))
	timeoutErr := checkBetween(mg.SessionTimeout.Duration, minSessionTimeout, maxSessionTimeout)
	check("cluster.manager.session_timeout", timeoutErr)
	if d := mg.SessionLifetime.Duration; d != 0 {
		check("cluster.manager.session_lifetime", checkBetween(d, minSessionTimeout, maxSessionLifetime))
	}
	if mg.MaxActive < 0 {
		check("cluster.manager.max_active", fmt.Errorf("%d is out of range; allowed 0 (no limit) or more", mg.MaxActive))
	}
	check("cluster.manager.max_session_size", checkSize(mg.MaxSessionSize, minSessionSize, maxQueueLimit))
	check("cluster.manager.replication", checkOneOf(mg.Replication, replicationModes))
	if d := mg.StateTransferTimeout.Duration; d < 0 {
		check("cluster.manager.state_transfer_timeout", fmt.Errorf(`%v must not be negative ("0s": do not wait)`, d))
	}
	check("cluster.manager.expire_interval", checkBetween(mg.ExpireInterval.Duration, minExpireInterval, maxExpireInterval))
	// Compared only with a valid session_timeout, so that one mistake is
	// not reported twice.
	switch ti := mg.TouchInterval.Duration; {
	case ti < minTouchInterval:
		check("cluster.manager.touch_interval", fmt.Errorf("%v is too short; allowed at least %v", ti, minTouchInterval))
	case timeoutErr == nil && manager.CheckTouch(ti, mg.SessionTimeout.Duration) != nil:
		checkPair("cluster.manager.touch_interval", "cluster.manager.session_timeout",
			fmt.Errorf("%v must be at most session_timeout/%d (%v), so that no copy of a session expires while it is in use on another node",
				ti, manager.TouchesPerTimeout, mg.SessionTimeout.Duration/manager.TouchesPerTimeout))
	}

	check("cluster.manager.sync_min_copies", checkRange(mg.SyncMinCopies, 1, 64))
	if d := mg.AntiEntropyInterval.Duration; d != 0 {
		check("cluster.manager.anti_entropy_interval", checkBetween(d, 100*time.Millisecond, time.Hour))
	}

	sec := c.Cluster.Security
	_, keysErr := keyring.Decode(sec.Keys...)
	gb, ga, gossipProbs := m.Gossip.addrs()
	probs = append(probs, gossipProbs...)
	if gb.IsValid() && gb.Addr().IsUnspecified() && !ga.IsValid() {
		checkPair("cluster.membership.gossip.advertise", "cluster.membership.gossip.bind",
			fmt.Errorf("bind %v listens on every interface: set advertise to the IP:port the other members reach", gb))
	}
	for _, err := range m.Gossip.seeds() {
		probs = append(probs, problem{key: gossipSeedsKey, err: err})
	}

	check("cluster.security.keys", keysErr)
	keyed := len(sec.Keys) > 0 || sec.KeyFile != ""
	if len(sec.Keys) > 0 && sec.KeyFile != "" {
		checkPair("cluster.security.key_file", "cluster.security.keys", errors.New("set keys or key_file, not both"))
	}
	if keyed && sec.Insecure {
		checkPair("cluster.security.insecure", "cluster.security.keys", errors.New("insecure = true with a key: remove one of them (a keyed cluster is not insecure)"))
	}
	if key, addr := c.exposed(); !keyed && !sec.Insecure && key != "" {
		check(key, fmt.Errorf(
			"%v is not loopback, and [cluster.security] sets no key: anyone who reaches that network could read and change every session. "+
				"Set cluster.security.keys or key_file (flockctl keygen prints a key), or cluster.security.insecure = true if the network is trusted", addr))
	}
	if d := sec.MaxClockSkew.Duration; checkBetween(d, time.Second, time.Hour) != nil {
		check("cluster.security.max_clock_skew", checkBetween(d, time.Second, time.Hour))
	} else if keyed && freqErr == nil && d < m.Frequency.Duration {
		checkPair("cluster.security.max_clock_skew", "cluster.membership.frequency",
			fmt.Errorf("%v must be at least frequency (%v)", d, m.Frequency))
	}

	if t := c.Cluster.TLS; t.Enabled() {
		for _, kv := range [][2]string{{"cluster.tls.cert", t.Cert}, {"cluster.tls.key", t.Key}, {"cluster.tls.ca", t.CA}} {
			if kv[1] == "" {
				check(kv[0], errors.New("missing: set cert, key and ca together (or none)"))
			}
		}
	}

	se := c.Session
	check("session.cookie_name", checkCookieName(se.CookieName))
	check("session.cookie_path", checkCookiePath(se.CookiePath))
	check("session.cookie_domain", checkCookieDomain(se.CookieDomain))
	if same, err := se.sameSite(); err != nil {
		check("session.cookie_same_site", err)
	} else if valve.CheckSameSite(same, se.CookieSecure) != nil {
		checkPair("session.cookie_same_site", "session.cookie_secure",
			errors.New(`"None" requires session.cookie_secure = true; browsers reject a SameSite=None cookie that is not Secure`))
	}
	if _, err := se.filter(); err != nil {
		check("session.static_filter", err)
	}
	if se.IDHeader != "" {
		check("session.id_header", checkIDHeader(se.IDHeader))
	}

	return probs
}

// Filter compiles the static filter: a request whose path it matches never
// touches sessions. It returns nil when the filter is empty. It fails only on
// a Config that has not passed [Config.Validate].
func (s Session) Filter() (*regexp.Regexp, error) {
	re, err := s.filter()
	if err != nil {
		return nil, fmt.Errorf("session.static_filter: %w", err)
	}
	return re, nil
}

func (s Session) filter() (*regexp.Regexp, error) {
	if s.StaticFilter == "" {
		return nil, nil
	}
	re, err := regexp.Compile(s.StaticFilter)
	if err != nil {
		return nil, fmt.Errorf("%q is not a Go regular expression: %w", s.StaticFilter, err)
	}
	return re, nil
}

// SameSite returns the SameSite attribute of the session cookie. For
// cookie_same_site = "" it returns 0, which [http.Cookie] writes as no
// SameSite attribute at all (browsers then apply their own default, usually
// Lax); it never returns [http.SameSiteDefaultMode]. It fails only on a
// Config that has not passed [Config.Validate].
func (s Session) SameSite() (http.SameSite, error) {
	m, err := s.sameSite()
	if err != nil {
		return 0, fmt.Errorf("session.cookie_same_site: %w", err)
	}
	return m, nil
}

func (s Session) sameSite() (http.SameSite, error) {
	if m, ok := sameSiteModes[s.CookieSameSite]; ok {
		return m, nil
	}
	for name := range sameSiteModes {
		if name != "" && strings.EqualFold(name, s.CookieSameSite) {
			return 0, fmt.Errorf("%q is not supported; write %q (values are case-sensitive); allowed: %s", s.CookieSameSite, name, sameSiteAllowed)
		}
	}
	return 0, fmt.Errorf("%q is not supported; allowed: %s", s.CookieSameSite, sameSiteAllowed)
}

// Group returns the multicast group heartbeats are sent to. It fails only on
// a Config that has not passed [Config.Validate].
func (m Membership) Group() (netip.AddrPort, error) {
	addr, err := m.group()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("cluster.membership.address: %w", err)
	}
	if err := checkPort(m.Port); err != nil {
		return netip.AddrPort{}, fmt.Errorf("cluster.membership.port: %w", err)
	}
	return netip.AddrPortFrom(addr, uint16(m.Port)), nil
}

// BindAddr returns the address of the interface that carries heartbeats. It
// fails only on a Config that has not passed [Config.Validate].
func (m Membership) BindAddr() (netip.Addr, error) {
	addr, err := m.bindAddr()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cluster.membership.bind: %w", err)
	}
	return addr, nil
}

// HostAddr returns the address peers connect to. It fails only on a Config
// that has not passed [Config.Validate].
func (r Receiver) HostAddr() (netip.Addr, error) {
	addr, err := r.hostAddr()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cluster.receiver.host: %w", err)
	}
	return addr, nil
}

// Addrs returns the members' addresses, in the order listed, IPv4-mapped
// IPv6 addresses unmapped. It fails only on a Config that has not passed
// [Config.Validate]; the error names each bad member by its index.
func (s Static) Addrs() ([]netip.AddrPort, error) {
	addrs, _, errs := s.addrs()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return addrs, nil
}

// Names are the members given by host name, "host:port" each, to be
// looked up in DNS (see [DNS]).
func (s Static) Names() []string {
	_, names, _ := s.addrs()
	return names
}

// addrs parses the members, returning one error per bad or repeated
// member; those given by host name are returned in names.
func (s Static) addrs() (addrs []netip.AddrPort, names []string, errs []error) {
	addrs = make([]netip.AddrPort, 0, len(s.Members))
	seen := make(map[netip.AddrPort]int, len(s.Members))
	for i, m := range s.Members {
		ap, err := parseMember(m)
		if errors.Is(err, errHostname) {
			names = append(names, m)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", staticKey, i, err))
			continue
		}
		if j, ok := seen[ap]; ok {
			errs = append(errs, fmt.Errorf("%s[%d]: %q is already listed as members[%d] (%q)", staticKey, i, m, j, s.Members[j]))
			continue
		}
		seen[ap] = i
		addrs = append(addrs, ap)
	}
	return addrs, names, errs
}

// errHostname: a member is given by a host name (and a valid port).
var errHostname = errors.New("a host name")

// parseMember parses the address of a peer's receiver: a literal IP, or a
// host name with a valid port (errHostname), looked up later.
func parseMember(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:port; %s", s, memberAddrSyntax)
	}
	addr, err := netip.ParseAddr(host)
	switch {
	case err != nil && isHostname(host):
		if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 {
			return netip.AddrPort{}, fmt.Errorf("port %q in %q is not a port number 1..65535", port, s)
		}
		return netip.AddrPort{}, errHostname
	case err != nil:
		return netip.AddrPort{}, fmt.Errorf("host %q in %q is not an IP address; %s", host, s, memberAddrSyntax)
	case addr.Is4() && strings.HasPrefix(s, "["):
		// net.SplitHostPort takes "[10.0.0.1]:4000"; netip does not.
		return netip.AddrPort{}, fmt.Errorf("%q puts an IPv4 address in brackets; write it as \"%s:%s\"", s, host, port)
	case addr.IsUnspecified():
		return netip.AddrPort{}, fmt.Errorf("%q has the unspecified address %s; want the address a peer's receiver listens on", s, addr)
	case addr.IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("%q has the multicast address %s; want the address a peer's receiver listens on", s, addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case errors.Is(err, strconv.ErrRange) || err == nil && n == 0:
		return netip.AddrPort{}, fmt.Errorf("port %s in %q is out of range; allowed 1..65535", port, s)
	case err != nil:
		return netip.AddrPort{}, fmt.Errorf("port %q in %q is not a number", port, s)
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(n)), nil
}

func (m Membership) group() (netip.Addr, error) {
	addr, err := netip.ParseAddr(m.Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address; want a multicast address such as \"228.0.0.4\"", m.Address)
	}
	if !addr.Is4() || !addr.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 multicast address (224.0.0.0/4), such as \"228.0.0.4\"", m.Address)
	}
	return addr, nil
}

// bindAddr must be IPv4 as long as heartbeats are: the multicast socket
// joins the group through this interface address.
func (m Membership) bindAddr() (netip.Addr, error) {
	addr, err := interfaceAddr(m.Bind, "the interface that carries heartbeats")
	if err == nil && !addr.Is4() {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address; heartbeats are IPv4 multicast, so bind needs the interface's IPv4 address, such as \"10.0.0.5\"", m.Bind)
	}
	return addr, err
}

func (r Receiver) hostAddr() (netip.Addr, error) {
	return interfaceAddr(r.Host, "this node that peers connect to")
}

// interfaceAddr parses the address of one of this node's interfaces. It must
// be a literal IP naming exactly one interface: heartbeats sent from an
// unspecified address go out wherever the routing table says, which is how
// multicast ends up on the wrong network, and peers cannot connect to
// 0.0.0.0 when it is advertised.
func interfaceAddr(s, what string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address; want the address of %s, such as \"10.0.0.5\"", s, what)
	case addr.IsUnspecified():
		return netip.Addr{}, fmt.Errorf("%q is the unspecified address; want the address of %s, such as \"10.0.0.5\"", s, what)
	case addr.IsMulticast():
		return netip.Addr{}, fmt.Errorf("%q is a multicast address; want the address of %s, such as \"10.0.0.5\"", s, what)
	}
	return addr, nil
}

// checkName allows what can follow the dot in a session id
// ("<id>.<name>"): no dots, nothing that needs escaping in a cookie or URL.
func checkName(s string) error {
	ok := len(s) >= 1 && len(s) <= maxNameLen && isAlnum(s[0])
	for i := 0; ok && i < len(s); i++ {
		ok = isAlnum(s[i]) || s[i] == '-' || s[i] == '_'
	}
	if !ok {
		return fmt.Errorf("%q is not allowed; use 1 to %d letters, digits, '-' or '_', starting with a letter or digit", s, maxNameLen)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// minSessionSize leaves room for a few attributes.
const minSessionSize = 1 << 10

// AdminOff as [server] admin serves no admin endpoints.
const AdminOff = "off"

// minTokenLen keeps a bearer token out of reach of guessing over HTTP.
const minTokenLen = 16

func checkToken(s string) error {
	if s == "" {
		return nil
	}
	if len(s) < minTokenLen {
		return fmt.Errorf("%d characters is too short to resist guessing; use at least %d (flockctl keygen prints one)", len(s), minTokenLen)
	}
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return errors.New("only printable ASCII without spaces is allowed (it is sent in an HTTP header)")
		}
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port, such as \"127.0.0.1:8080\" or \":8080\"", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case errors.Is(err, strconv.ErrRange) || err == nil && n == 0:
		return fmt.Errorf("port %s in %q is out of range; allowed 1..65535", port, s)
	case err != nil:
		// Service names ("http") are refused too: they depend on the
		// host's /etc/services.
		return fmt.Errorf("port %q in %q is not a number", port, s)
	}
	if host == "" {
		return nil // all interfaces
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !isHostname(host) {
		return fmt.Errorf("host %q in %q is not an IP address or hostname", host, s)
	}
	return nil
}

// isHostname follows the rules the net package applies before looking a name
// up, so that a host accepted here is one net.Listen will try to resolve: dot
// separated labels of letters, digits, '-' and '_', no label longer than 63
// bytes or starting or ending with '-', and not all digits (that would be a
// mistyped IPv4 address such as "10.0.0.256").
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	nonNumeric := false
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case isAlnum(c) && !('0' <= c && c <= '9'), c == '-', c == '_':
				nonNumeric = true
			case '0' <= c && c <= '9':
			default:
				return false
			}
		}
	}
	return nonNumeric
}

// checkDomain keeps the domain something that can be sent in a heartbeat and
// printed in a log line without quoting.
func checkDomain(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > maxDomainLen {
		return fmt.Errorf("is %d bytes long; allowed at most %d", len(s), maxDomainLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%q contains %q; allowed: printable ASCII without spaces", s, s[i])
		}
	}
	return nil
}

func checkMembershipType(t string) error { return checkOneOf(t, membershipTypes) }

func checkManagerMode(m string) error { return checkOneOf(m, managerModes) }

// checkOneOf checks that s is one of allowed. Values are case-sensitive.
func checkOneOf(s string, allowed []string) error {
	if slices.Contains(allowed, s) {
		return nil
	}
	return fmt.Errorf("%q is not supported; allowed: %s", s, quoteAll(allowed))
}

func quoteAll(list []string) string {
	quoted := make([]string, len(list))
	for i, s := range list {
		quoted[i] = strconv.Quote(s)
	}
	return strings.Join(quoted, ", ")
}

// checkCookieName allows an RFC 6265 cookie name: a token, that is one or
// more ASCII characters other than controls, spaces and separators. net/http
// refuses to write a cookie with any other name.
func checkCookieName(s string) error {
	const allowed = "allowed: ASCII letters, digits and !#$%&'*+-.^_`|~"
	if s == "" {
		return errors.New("must not be empty; " + allowed)
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return fmt.Errorf("%q contains %q, which a cookie name (an RFC 6265 token) cannot; %s", s, r, allowed)
		}
	}
	return nil
}

// checkIDHeader allows a header field name (an RFC 9110 token) that is
// not one the HTTP machinery owns: an id in Cookie, Host or a hop-by-hop
// header would be rewritten or dropped on the way.
func checkIDHeader(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("%q is longer than 64 bytes", s)
	}
	if s == "" || strings.IndexFunc(s, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r)
	}) >= 0 {
		return fmt.Errorf("%q is not a header name (an RFC 9110 token); allowed: ASCII letters, digits and !#$%%&'*+-.^_`|~, such as \"Mcp-Session-Id\"", s)
	}
	switch strings.ToLower(s) {
	case "cookie", "set-cookie", "host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
		"proxy-authorization", "proxy-connection", "content-length", "content-type", "authorization":
		return fmt.Errorf("%q is a header HTTP itself uses; name one of your own, such as \"Mcp-Session-Id\"", s)
	}
	return nil
}

// checkCookiePath allows a path that net/http writes unchanged: it drops
// the bytes after which the Path attribute would no longer parse.
func checkCookiePath(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf(`%q must start with "/", such as "/" or "/app"`, s)
	}
	for _, r := range s {
		if r < ' ' || r >= 0x7f || r == ';' {
			return fmt.Errorf("%q contains %q; allowed: printable ASCII other than ';'", s, r)
		}
	}
	return nil
}

// checkCookieDomain allows what net/http writes as a Domain attribute
// rather than dropping it: a domain name, with an optional leading dot, or
// an IPv4 address.
func checkCookieDomain(s string) error {
	if s == "" {
		return nil // the host only
	}
	if err := (&http.Cookie{Name: "n", Domain: s}).Valid(); err != nil {
		return fmt.Errorf(`%q is not a domain name; want a name such as "example.com", or "" for the host only`, s)
	}
	return nil
}

// checkBetween checks a duration that must be within lo..hi.
func checkBetween(d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%v is out of range; allowed %v..%v", d, lo, hi)
	}
	return nil
}

// checkTimeout checks a duration that must be positive and at most most.
func checkTimeout(d, most time.Duration) error {
	switch {
	case d <= 0:
		return fmt.Errorf("%v must be greater than 0", d)
	case d > most:
		return fmt.Errorf("%v is too long; allowed at most %v", d, most)
	}
	return nil
}

func checkSize(s Size, lo, hi int64) error {
	if s.Bytes < lo || s.Bytes > hi {
		return fmt.Errorf("%v is out of range; allowed %v..%v", s, Size{lo}, Size{hi})
	}
	return nil
}

func checkPort(n int) error { return checkRange(n, 1, 65535) }

func checkRange(n, lo, hi int) error {
	if n < lo || n > hi {
		return fmt.Errorf("%d is out of range; allowed %d..%d", n, lo, hi)
	}
	return nil
}

// exposed names the key of the first address this node binds beyond this
// host (the receiver, the heartbeat interface), and the address; "" if
// both are loopback. Addresses that do not parse are reported elsewhere.
func (c Config) exposed() (string, netip.Addr) {
	if a, err := c.Cluster.Receiver.hostAddr(); err == nil && !a.IsLoopback() {
		return "cluster.receiver.host", a
	}
	if m := c.Cluster.Membership; m.Type == "gossip" {
		b, a, _ := m.Gossip.addrs()
		if b.IsValid() && !b.Addr().IsLoopback() && !b.Addr().IsUnspecified() {
			return "cluster.membership.gossip.bind", b.Addr()
		}
		if a.IsValid() && !a.Addr().IsLoopback() {
			return "cluster.membership.gossip.advertise", a.Addr()
		}
	}
	if m := c.Cluster.Membership; m.Type == "multicast" {
		if a, err := m.bindAddr(); err == nil && !a.IsLoopback() {
			return "cluster.membership.bind", a
		}
	}
	return "", netip.Addr{}
}

// LoadKeys returns the keys, decoded: from keys, or read from key_file.
// It returns nil when neither is set.
func (s Security) LoadKeys() ([][]byte, error) {
	if s.KeyFile == "" {
		if len(s.Keys) == 0 {
			return nil, nil
		}
		keys, err := keyring.Decode(s.Keys...)
		if err != nil {
			return nil, fmt.Errorf("cluster.security.keys: %w", err)
		}
		return keys, nil
	}
	data, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.security.key_file: %w", err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("cluster.security.key_file: %s holds no key", s.KeyFile)
	}
	keys, err := keyring.Decode(lines...)
	if err != nil {
		return nil, fmt.Errorf("cluster.security.key_file %s: %w", s.KeyFile, err)
	}
	return keys, nil
}

const gossipSeedsKey = "cluster.membership.gossip.seeds"

// Addrs returns the gossip bind address and the advertised one (zero if
// "", which is bind). It fails only on a Config that has not passed
// [Config.Validate].
func (g Gossip) Addrs() (bind, advertise netip.AddrPort, err error) {
	b, a, probs := g.addrs()
	if len(probs) > 0 {
		return b, a, probs[0].err
	}
	return b, a, nil
}

func (g Gossip) addrs() (bind, advertise netip.AddrPort, probs []problem) {
	parse := func(key, s string, unspecified bool) netip.AddrPort {
		ap, err := netip.ParseAddrPort(s)
		switch {
		case err != nil:
			probs = append(probs, problem{key: key, err: fmt.Errorf("%s: %q is not IP:port, such as \"198.51.100.10:7946\"", key, s)})
		case ap.Port() == 0:
			probs = append(probs, problem{key: key, err: fmt.Errorf("%s: port 0 in %q: allowed 1..65535", key, s)})
		case ap.Addr().IsMulticast() || ap.Addr().IsUnspecified() && !unspecified:
			probs = append(probs, problem{key: key, err: fmt.Errorf("%s: %q: want a unicast address of this host", key, s)})
		default:
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		return netip.AddrPort{}
	}
	bind = parse("cluster.membership.gossip.bind", g.Bind, true)
	if g.Advertise != "" {
		advertise = parse("cluster.membership.gossip.advertise", g.Advertise, false)
	}
	return bind, advertise, probs
}

// SeedAddrs returns the seeds given as IP:port, in the order listed, and
// those given by host name ("host:port", looked up in DNS). It fails only
// on a Config that has not passed [Config.Validate].
func (g Gossip) SeedAddrs() (addrs []netip.AddrPort, names []string, err error) {
	if errs := g.seeds(); len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	for _, s := range g.Seeds {
		if ap, err := parseMember(s); err == nil {
			addrs = append(addrs, ap)
		} else {
			names = append(names, s)
		}
	}
	return addrs, names, nil
}

// seeds returns one error per bad or repeated seed.
func (g Gossip) seeds() (errs []error) {
	seen := make(map[string]int, len(g.Seeds))
	for i, s := range g.Seeds {
		if _, err := parseMember(s); err != nil && !errors.Is(err, errHostname) {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", gossipSeedsKey, i, err))
			continue
		}
		if j, ok := seen[s]; ok {
			errs = append(errs, fmt.Errorf("%s[%d]: %q is already listed as seeds[%d]", gossipSeedsKey, i, s, j))
			continue
		}
		seen[s] = i
	}
	return errs
}
