package conf

import (
	"bytes"
	"errors"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const shipped = "server.toml"

func TestShippedFileIsDefault(t *testing.T) {
	got, err := Load(shipped)
	if err != nil {
		t.Fatalf("Load(%q): %v", shipped, err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Load(%q) =\n%+v\nwant Default() =\n%+v", shipped, got, want)
	}
}

// TestShippedFileDocumentsEveryKey fails when a field is added to Config
// without a documented line in server.toml.
// testKey is a valid key, for configurations that need one.
const testKey = "qUoA0M5Kj9cYvDq8Gf0wS0o3x3gG7b0kz8mB1xg7b5A="

func TestShippedFileDocumentsEveryKey(t *testing.T) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(Default()); err != nil {
		t.Fatal(err)
	}
	var encoded map[string]any
	if _, err := toml.Decode(buf.String(), &encoded); err != nil {
		t.Fatal(err)
	}
	keys := leafKeys(encoded, nil)
	if len(keys) != 67 {
		t.Errorf("Default() encodes %d keys, want 67: %v", len(keys), keys)
	}

	data, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	fileLines := strings.Split(string(data), "\n")
	lines := keyLines(string(data))
	for _, key := range keys {
		n, ok := lines[key]
		if !ok {
			t.Errorf("%s: key %q is missing", shipped, key)
			continue
		}
		if line := fileLines[n-1]; !strings.Contains(line, "#") {
			t.Errorf("%s:%d: key %q has no comment: %s", shipped, n, key, line)
		}
	}
}

// leafKeys returns the dotted keys of the values in table that are not tables.
func leafKeys(table map[string]any, path toml.Key) []string {
	var keys []string
	for _, name := range slices.Sorted(maps.Keys(table)) {
		key := append(path[:len(path):len(path)], name)
		if sub, ok := table[name].(map[string]any); ok {
			keys = append(keys, leafKeys(sub, key)...)
		} else {
			keys = append(keys, key.String())
		}
	}
	return keys
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/no-such-file.toml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: got %v, want an error wrapping os.ErrNotExist", err)
	}
}

// TestParseErrors checks, for each bad input, every problem reported: how
// many, in which order, and that each names its key and line.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // the i'th problem must contain want[i]
	}{
		// Go-native sessions (issue 16).
		{
			name: "session_lifetime too short",
			in:   "[cluster.manager]\nsession_lifetime = \"500ms\"\n",
			want: []string{`server.toml:2: cluster.manager.session_lifetime: 500ms is out of range; allowed 1s..8760h0m0s`},
		},
		{
			name: "session_lifetime negative",
			in:   "[cluster.manager]\nsession_lifetime = \"-1h\"\n",
			want: []string{`cluster.manager.session_lifetime: -1h0m0s is out of range`},
		},
		{
			name: "id_header with a space",
			in:   "[session]\nid_header = \"Mcp Session\"\n",
			want: []string{`server.toml:2: session.id_header: "Mcp Session" is not a header name`},
		},
		{
			name: "id_header Cookie",
			in:   "[session]\nid_header = \"cookie\"\n",
			want: []string{`session.id_header: "cookie" is a header HTTP itself uses`},
		},
		{
			name: "id_header too long",
			in:   "[session]\nid_header = \"" + strings.Repeat("X", 65) + "\"\n",
			want: []string{`session.id_header: "XXXX`},
		},
		// Unknown keys.
		{
			name: "unknown top-level key",
			in:   "# comment\nverbose = true\n",
			want: []string{`server.toml:2: unknown key "verbose"`},
		},
		{
			name: "unknown nested key with suggestion",
			in:   "[cluster.membership]\nport = 45564\nfrequncy = \"1s\"\n",
			want: []string{`server.toml:3: unknown key "cluster.membership.frequncy" (did you mean "cluster.membership.frequency"?)`},
		},
		{
			name: "unknown table reported once, not per key",
			in:   "[server]\nname = \"a\"\n\n[cluster.foo]\nx = 1\ny = 2\n",
			want: []string{`server.toml:4: unknown key "cluster.foo"`},
		},
		{
			name: "unknown array of tables",
			in:   "[[peers]]\nhost = \"10.0.0.1\"\n",
			want: []string{`server.toml:1: unknown key "peers"`},
		},
		{
			name: "keys are case-sensitive",
			in:   "[server]\nName = \"node2\"\n",
			want: []string{`server.toml:2: unknown key "server.Name" (did you mean "server.name"?)`},
		},
		{
			name: "unknown dotted key",
			in:   "cluster.receiver.adress = \"10.0.0.5\"\n",
			want: []string{`server.toml:1: unknown key "cluster.receiver.adress"`},
		},
		{
			name: "unknown key in inline table",
			in:   "[cluster]\nreceiver = { port = 4001, hots = \"10.0.0.5\" }\n",
			want: []string{`server.toml:2: unknown key "cluster.receiver.hots" (did you mean "cluster.receiver.host"?)`},
		},
		{
			name: "unknown quoted key",
			in:   "[server]\n\"na me\" = 1\n",
			want: []string{`server.toml:2: unknown key "server.\"na me\""`},
		},

		// Syntax errors keep the library's line.
		{
			name: "syntax error",
			in:   "[server]\nname = \"node1\"\nhttp = = 1\n",
			want: []string{"server.toml:3: expected value but found '=' instead"},
		},
		{
			name: "unclosed table header",
			in:   "[server\nname = \"node1\"\n",
			want: []string{"server.toml:1: "},
		},
		{
			name: "unterminated string",
			in:   "\n\n[server]\nname = \"node1\n",
			want: []string{"server.toml:4: "},
		},
		{
			name: "duplicate key",
			in:   "[server]\nname = \"a\"\nname = \"b\"\n",
			want: []string{"server.toml:3: "},
		},

		// Values of the wrong TOML type.
		{
			name: "string for integer",
			in:   "[cluster.membership]\nport = \"45564\"\n",
			want: []string{`server.toml:2: cluster.membership.port: found string "45564"; want an integer such as 45564`},
		},
		{
			name: "integer for duration",
			in:   "[cluster.membership]\n\nfrequency = 500\n",
			want: []string{`server.toml:3: cluster.membership.frequency: found integer 500; want a string such as "500ms"`},
		},
		{
			name: "integer for string",
			in:   "[server]\nname = 1\n",
			want: []string{`server.toml:2: server.name: found integer 1; want a string such as "node1"`},
		},
		{
			name: "float for integer",
			in:   "[cluster.membership]\nttl = 1.5\n",
			want: []string{`server.toml:2: cluster.membership.ttl: found float 1.5; want an integer such as 1`},
		},
		{
			name: "value for table",
			in:   "cluster = 5\n",
			want: []string{`server.toml:1: cluster: found integer 5; want a table`},
		},
		{
			name: "table for value",
			in:   "[cluster.membership.port]\n",
			want: []string{`server.toml:1: cluster.membership.port: found table; want an integer such as 45564`},
		},
		{
			name: "array for string",
			in:   "[cluster.membership]\nbind = [\"10.0.0.5\"]\n",
			want: []string{`server.toml:2: cluster.membership.bind: found array; want a string such as "127.0.0.1"`},
		},
		{
			name: "date for duration",
			in:   "[cluster.membership]\ndrop_time = 1979-05-27\n",
			want: []string{`server.toml:2: cluster.membership.drop_time: found date-time; want a string such as "3s"`},
		},

		// Values Validate rejects.
		{
			name: "name with a dot",
			in:   "[server]\nname = \"node.1\"\n",
			want: []string{`server.toml:2: server.name: "node.1" is not allowed`},
		},
		{
			name: "empty name",
			in:   "[server]\nname = \"\"\n",
			want: []string{`server.toml:2: server.name: "" is not allowed`},
		},
		{
			name: "name starting with dash",
			in:   "[server]\nname = \"-a\"\n",
			want: []string{`server.name: "-a" is not allowed`},
		},
		{
			name: "name too long",
			in:   "[server]\nname = \"" + strings.Repeat("a", 64) + "\"\n",
			want: []string{`server.name: "aaaa`},
		},
		{
			name: "http without port",
			in:   "[server]\nhttp = \"127.0.0.1\"\n",
			want: []string{`server.toml:2: server.http: "127.0.0.1" is not host:port`},
		},
		{
			name: "http port zero",
			in:   "[server]\nhttp = \"127.0.0.1:0\"\n",
			want: []string{`server.http: port 0 in "127.0.0.1:0" is out of range; allowed 1..65535`},
		},
		{
			name: "http port too large",
			in:   "[server]\nhttp = \":65536\"\n",
			want: []string{`server.http: port 65536 in ":65536" is out of range; allowed 1..65535`},
		},
		{
			name: "http service name",
			in:   "[server]\nhttp = \"localhost:http\"\n",
			want: []string{`server.http: port "http" in "localhost:http" is not a number`},
		},
		{
			name: "http bad host",
			in:   "[server]\nhttp = \"no_such host:80\"\n",
			want: []string{`server.http: host "no_such host" in "no_such host:80" is not an IP address or hostname`},
		},
		{
			name: "http numeric host that is no IP",
			in:   "[server]\nhttp = \"10.0.0.256:80\"\n",
			want: []string{`server.http: host "10.0.0.256"`},
		},
		{
			name: "empty domain",
			in:   "[cluster]\ndomain = \"\"\n",
			want: []string{`server.toml:2: cluster.domain: must not be empty`},
		},
		{
			name: "domain with space",
			in:   "[cluster]\ndomain = \"a b\"\n",
			want: []string{`cluster.domain: "a b" contains ' '; allowed: printable ASCII without spaces`},
		},
		{
			name: "domain not ASCII",
			in:   "[cluster]\ndomain = \"café\"\n",
			want: []string{`cluster.domain: "café" contains`},
		},
		{
			name: "domain too long",
			in:   "[cluster]\ndomain = \"" + strings.Repeat("d", 65) + "\"\n",
			want: []string{`cluster.domain: is 65 bytes long; allowed at most 64`},
		},
		{
			name: "unsupported membership type",
			in:   "[cluster.membership]\ntype = \"swim\"\n",
			want: []string{`server.toml:2: cluster.membership.type: "swim" is not supported; allowed: "multicast", "static", "dns", "gossip"`},
		},
		{
			name: "gossip bind not IP:port",
			in:   "[cluster.membership]\ntype = \"gossip\"\n[cluster.membership.gossip]\nbind = \"nope\"\n",
			want: []string{`server.toml:4: cluster.membership.gossip.bind: "nope" is not IP:port, such as "198.51.100.10:7946"`},
		},
		{
			name: "gossip bind on every interface without advertise",
			in:   "[cluster.membership]\ntype = \"gossip\"\n[cluster.membership.gossip]\nbind = \"0.0.0.0:7946\"\n",
			want: []string{`cluster.membership.gossip.advertise: bind 0.0.0.0:7946 listens on every interface: set advertise`},
		},
		{
			name: "gossip on a network without a key",
			in:   "[cluster.membership]\ntype = \"gossip\"\n[cluster.membership.gossip]\nbind = \"198.51.100.10:7946\"\n",
			want: []string{`server.toml:4: cluster.membership.gossip.bind: 198.51.100.10 is not loopback, and [cluster.security] sets no key`},
		},
		{
			name: "gossip seeds",
			in:   "[cluster.membership.gossip]\nseeds = [\"198.51.100.10\", \"flock-0:7946\", \"flock-0:7946\"]\n",
			want: []string{
				`server.toml:2: cluster.membership.gossip.seeds[0]: "198.51.100.10" is not IP:port`,
				`server.toml:2: cluster.membership.gossip.seeds[2]: "flock-0:7946" is already listed as seeds[1]`,
			},
		},
		{
			name: "log level",
			in:   "[server]\nlog_level = \"verbose\"\n",
			want: []string{`server.toml:2: server.log_level: "verbose" is not supported; allowed: "debug", "info", "warn", "error"`},
		},
		{
			name: "log format",
			in:   "[server]\nlog_format = \"xml\"\n",
			want: []string{`server.toml:2: server.log_format: "xml" is not supported; allowed: "text", "json"`},
		},
		{
			name: "admin address",
			in:   "[server]\nadmin = \"nope\"\n",
			want: []string{`server.toml:2: server.admin:`},
		},
		{
			name: "drain timeout",
			in:   "[server]\ndrain_timeout = \"0s\"\n",
			want: []string{`server.toml:2: server.drain_timeout: 0s must be greater than 0`},
		},
		{
			name: "unicast group address",
			in:   "[cluster.membership]\naddress = \"10.0.0.1\"\n",
			want: []string{`server.toml:2: cluster.membership.address: "10.0.0.1" is not an IPv4 multicast address`},
		},
		{
			name: "group address not an IP",
			in:   "[cluster.membership]\naddress = \"mcast.example\"\n",
			want: []string{`cluster.membership.address: "mcast.example" is not an IP address`},
		},
		{
			name: "membership port zero",
			in:   "[cluster.membership]\nport = 0\n",
			want: []string{`server.toml:2: cluster.membership.port: 0 is out of range; allowed 1..65535`},
		},
		{
			name: "membership port too large",
			in:   "[cluster.membership]\nport = 65536\n",
			want: []string{`cluster.membership.port: 65536 is out of range; allowed 1..65535`},
		},
		{
			name: "bind unspecified IPv4",
			in:   "[cluster.membership]\nbind = \"0.0.0.0\"\n",
			want: []string{`server.toml:2: cluster.membership.bind: "0.0.0.0" is the unspecified address`},
		},
		{
			name: "bind unspecified IPv6",
			in:   "[cluster.membership]\nbind = \"::\"\n",
			want: []string{`cluster.membership.bind: "::" is the unspecified address`},
		},
		{
			name: "bind multicast",
			in:   "[cluster.membership]\nbind = \"228.0.0.4\"\n",
			want: []string{`cluster.membership.bind: "228.0.0.4" is a multicast address`},
		},
		{
			name: "bind interface name",
			in:   "[cluster.membership]\nbind = \"eth0\"\n",
			want: []string{`cluster.membership.bind: "eth0" is not an IP address; want the address of the interface that carries heartbeats`},
		},
		{
			name: "frequency not a duration",
			in:   "[cluster.membership]\nfrequency = \"fast\"\n",
			want: []string{`server.toml:2: cluster.membership.frequency: "fast" is not a duration (examples: "500ms", "2s")`},
		},
		{
			name: "frequency without unit",
			in:   "[cluster.membership]\nfrequency = \"500\"\n",
			want: []string{`cluster.membership.frequency: "500" is not a duration`},
		},
		{
			name: "frequency zero",
			in:   "[cluster.membership]\nfrequency = \"0s\"\n",
			want: []string{`server.toml:2: cluster.membership.frequency: 0s must be greater than 0`},
		},
		{
			name: "frequency negative",
			in:   "[cluster.membership]\nfrequency = \"-1s\"\n",
			want: []string{`cluster.membership.frequency: -1s must be greater than 0`},
		},
		{
			name: "frequency too long",
			in:   "[cluster.membership]\nfrequency = \"2m\"\ndrop_time = \"5m\"\n",
			want: []string{`cluster.membership.frequency: 2m0s is too long; allowed at most 1m0s`},
		},
		{
			name: "drop_time too short",
			in:   "[cluster.membership]\ndrop_time = \"600ms\"\n",
			want: []string{`server.toml:2: cluster.membership.drop_time: 600ms must be at least twice frequency (500ms)`},
		},
		{
			name: "default drop_time too short for frequency points at frequency",
			in:   "[cluster.membership]\nport = 45564\nfrequency = \"2s\"\n",
			want: []string{`server.toml:3: cluster.membership.drop_time: 3s must be at least twice frequency (2s)`},
		},
		{
			name: "ttl too large",
			in:   "[cluster.membership]\nttl = 300\n",
			want: []string{`server.toml:2: cluster.membership.ttl: 300 is out of range; allowed 0..255`},
		},
		{
			name: "ttl negative",
			in:   "[cluster.membership]\nttl = -1\n",
			want: []string{`cluster.membership.ttl: -1 is out of range; allowed 0..255`},
		},
		{
			name: "receiver host unspecified",
			in:   "[cluster.receiver]\nhost = \"0.0.0.0\"\n",
			want: []string{`server.toml:2: cluster.receiver.host: "0.0.0.0" is the unspecified address; want the address of this node that peers connect to`},
		},
		{
			name: "receiver host multicast",
			in:   "[cluster.receiver]\nhost = \"ff02::1\"\n",
			want: []string{`cluster.receiver.host: "ff02::1" is a multicast address`},
		},
		{
			name: "receiver host name",
			in:   "[cluster.receiver]\nhost = \"localhost\"\n",
			want: []string{`cluster.receiver.host: "localhost" is not an IP address`},
		},
		{
			name: "receiver port zero",
			in:   "[cluster.receiver]\nport = 0\n",
			want: []string{`server.toml:2: cluster.receiver.port: 0 is out of range; allowed 1..65535`},
		},
		{
			name: "auto_bind zero",
			in:   "[cluster.receiver]\nauto_bind = 0\n",
			want: []string{`server.toml:2: cluster.receiver.auto_bind: 0 is out of range; allowed 1..1000`},
		},
		{
			name: "auto_bind too large",
			in:   "[cluster.receiver]\nauto_bind = 1001\n",
			want: []string{`cluster.receiver.auto_bind: 1001 is out of range; allowed 1..1000`},
		},
		{
			name: "auto_bind past the last port",
			in:   "[cluster.receiver]\nport = 65500\nauto_bind = 100\n",
			want: []string{`server.toml:3: cluster.receiver.auto_bind: 100 tries ports 65500..65599; the last must be at most 65535`},
		},
		{
			name: "default auto_bind past the last port points at port",
			in:   "[cluster.receiver]\nport = 65500\n",
			want: []string{`server.toml:2: cluster.receiver.auto_bind: 100 tries ports 65500..65599`},
		},

		// Static membership.
		{
			name: "static without members points at type",
			in:   "[cluster.membership]\ntype = \"static\"\n",
			want: []string{`server.toml:2: cluster.membership.static.members: type "static" needs at least one member, such as ["198.51.100.10:4000", "198.51.100.11:4000"]`},
		},
		{
			name: "static with empty members",
			in:   "[cluster.membership]\ntype = \"static\"\n\n[cluster.membership.static]\nmembers = []\n",
			want: []string{`server.toml:5: cluster.membership.static.members: type "static" needs at least one member`},
		},
		{
			name: "member not a string",
			in:   "[cluster.membership.static]\nmembers = [\"198.51.100.10:4000\", 4000]\n",
			want: []string{`server.toml:2: cluster.membership.static.members[1]: found integer 4000; want a string such as "198.51.100.10:4000"`},
		},
		{
			name: "members not strings, over several lines, in index order",
			in: `[cluster.membership]
type = "static"

[cluster.membership.static]
members = [
  "198.51.100.10:4000", # a comment
  { host = "198.51.100.11" },
  "198.51.100.12:4000",
  ["198.51.100.13:4000"],
  1.5,
]
`,
			// Not also "needs at least one member": members is mistyped.
			want: []string{
				`server.toml:5: cluster.membership.static.members[1]: found table; want a string such as "198.51.100.10:4000"`,
				`server.toml:5: cluster.membership.static.members[3]: found array; want a string`,
				`server.toml:5: cluster.membership.static.members[4]: found float 1.5; want a string`,
			},
		},
		{
			name: "members not an array",
			in:   "[cluster.membership]\ntype = \"static\"\nstatic.members = \"198.51.100.10:4000\"\n",
			want: []string{`server.toml:3: cluster.membership.static.members: found string "198.51.100.10:4000"; want an array of strings such as ["198.51.100.10:4000"]`},
		},
		{
			name: "members array of tables",
			in:   "[[cluster.membership.static.members]]\nhost = \"198.51.100.10\"\n",
			want: []string{`server.toml:1: cluster.membership.static.members[0]: found table; want a string such as "198.51.100.10:4000"`},
		},
		{
			name: "static table not a table",
			in:   "[cluster.membership]\nstatic = [\"198.51.100.10:4000\"]\n",
			want: []string{`server.toml:2: cluster.membership.static: found array; want a table`},
		},
		{
			name: "member with hostname and a bad port",
			in:   "[cluster.membership]\ntype = \"static\"\nstatic.members = [\"198.51.100.10:4000\", \"db1.example.com:http\"]\n",
			want: []string{`server.toml:3: cluster.membership.static.members[1]: port "http" in "db1.example.com:http" is not a port number 1..65535`},
		},
		{
			name: "dns without a name",
			in:   "[cluster.membership]\ntype = \"dns\"\n",
			want: []string{`server.toml:2: cluster.membership.dns.name: type "dns" needs a name to look up`},
		},
		{
			name: "dns with bad values",
			in:   "[cluster.membership.dns]\nname = \"bad name!\"\nport = 70000\ninterval = \"10ms\"\nserver = \"dns.example:53\"\n",
			want: []string{
				`server.toml:2: cluster.membership.dns.name: "bad name!" is not a host name`,
				`server.toml:3: cluster.membership.dns.port: 70000 is out of range`,
				`server.toml:4: cluster.membership.dns.interval: 10ms is out of range`,
				`server.toml:5: cluster.membership.dns.server: "dns.example:53" is not IP:port`,
			},
		},
		{
			name: "member without port",
			in:   "cluster.membership.static.members = [\"198.51.100.10\"]\n",
			want: []string{`server.toml:1: cluster.membership.static.members[0]: "198.51.100.10" is not IP:port; want IP:port, such as "198.51.100.10:4000" or "[2001:db8::10]:4000"`},
		},
		{
			name: "member IPv6 without brackets",
			in:   "cluster.membership.static.members = [\"2001:db8::10:4000\"]\n",
			want: []string{`cluster.membership.static.members[0]: "2001:db8::10:4000" is not IP:port`},
		},
		{
			name: "member IPv4 in brackets",
			in:   "cluster.membership.static.members = [\"[198.51.100.10]:4000\"]\n",
			want: []string{`cluster.membership.static.members[0]: "[198.51.100.10]:4000" puts an IPv4 address in brackets; write it as "198.51.100.10:4000"`},
		},
		{
			name: "member bad IP",
			in:   "cluster.membership.static.members = [\"198.51.100.256:4000\"]\n",
			want: []string{`cluster.membership.static.members[0]: host "198.51.100.256" in "198.51.100.256:4000" is not an IP address; want IP:port`},
		},
		{
			name: "member port zero",
			in:   "cluster.membership.static.members = [\"198.51.100.10:0\"]\n",
			want: []string{`cluster.membership.static.members[0]: port 0 in "198.51.100.10:0" is out of range; allowed 1..65535`},
		},
		{
			name: "member port too large",
			in:   "cluster.membership.static.members = [\"[2001:db8::10]:65536\"]\n",
			want: []string{`cluster.membership.static.members[0]: port 65536 in "[2001:db8::10]:65536" is out of range; allowed 1..65535`},
		},
		{
			name: "member port name",
			in:   "cluster.membership.static.members = [\"198.51.100.10:flock\"]\n",
			want: []string{`cluster.membership.static.members[0]: port "flock" in "198.51.100.10:flock" is not a number`},
		},
		{
			name: "member unspecified",
			in:   "cluster.membership.static.members = [\"0.0.0.0:4000\", \"[::]:4000\"]\n",
			want: []string{
				`cluster.membership.static.members[0]: "0.0.0.0:4000" has the unspecified address 0.0.0.0`,
				`cluster.membership.static.members[1]: "[::]:4000" has the unspecified address ::`,
			},
		},
		{
			name: "member multicast",
			in:   "cluster.membership.static.members = [\"228.0.0.4:4000\"]\n",
			want: []string{`cluster.membership.static.members[0]: "228.0.0.4:4000" has the multicast address 228.0.0.4`},
		},
		{
			name: "duplicate member",
			in: `[cluster.membership]
type = "static"
static.members = [
  "198.51.100.10:4000",
  "198.51.100.11:4000",
  "198.51.100.10:4000",
  "[::ffff:198.51.100.11]:4000",
]
`,
			want: []string{
				`server.toml:3: cluster.membership.static.members[2]: "198.51.100.10:4000" is already listed as members[0] ("198.51.100.10:4000")`,
				`server.toml:3: cluster.membership.static.members[3]: "[::ffff:198.51.100.11]:4000" is already listed as members[1] ("198.51.100.11:4000")`,
			},
		},
		{
			name: "bad member reported with multicast too",
			in:   "[cluster.membership.static]\nmembers = [\"db1:0\"]\n",
			want: []string{`server.toml:2: cluster.membership.static.members[0]: port "0" in "db1:0" is not a port number`},
		},
		{
			name: "unknown key in static",
			in:   "[cluster.membership.static]\nmember = []\n",
			want: []string{`server.toml:2: unknown key "cluster.membership.static.member" (did you mean "cluster.membership.static.members"?)`},
		},

		// probe_timeout.
		{
			name: "probe_timeout longer than drop_time",
			in:   "[cluster.membership]\nprobe_timeout = \"5s\"\n",
			want: []string{`server.toml:2: cluster.membership.probe_timeout: 5s must be at most drop_time (3s)`},
		},
		{
			name: "default probe_timeout longer than drop_time points at drop_time",
			in:   "[cluster.membership]\nfrequency = \"100ms\"\ndrop_time = \"500ms\"\n",
			want: []string{`server.toml:3: cluster.membership.probe_timeout: 1s must be at most drop_time (500ms)`},
		},
		{
			name: "probe_timeout not compared with an invalid drop_time",
			in:   "[cluster.membership]\ndrop_time = \"600ms\"\n",
			want: []string{`server.toml:2: cluster.membership.drop_time: 600ms must be at least twice frequency (500ms)`},
		},
		{
			name: "probe_timeout not compared with a mistyped drop_time",
			in:   "[cluster.membership]\ndrop_time = 3\nprobe_timeout = \"5s\"\n",
			want: []string{`server.toml:2: cluster.membership.drop_time: found integer 3; want a string such as "3s"`},
		},
		{
			name: "probe_timeout negative",
			in:   "[cluster.membership]\nprobe_timeout = \"-1s\"\n",
			want: []string{`server.toml:2: cluster.membership.probe_timeout: -1s must not be negative ("0s" turns the probe off)`},
		},
		{
			name: "probe_timeout integer",
			in:   "[cluster.membership]\nprobe_timeout = 1\n",
			want: []string{`server.toml:2: cluster.membership.probe_timeout: found integer 1; want a string such as "1s"`},
		},

		// Sizes.
		{
			name: "size with decimal unit",
			in:   "[cluster.receiver]\nmax_frame = \"16MB\"\n",
			want: []string{`server.toml:2: cluster.receiver.max_frame: "16MB": MB could mean powers of 1000 or of 1024; use KiB, MiB or GiB`},
		},
		{
			name: "size with KB",
			in:   "[cluster.sender]\nqueue_limit = \"64KB\"\n",
			want: []string{`cluster.sender.queue_limit: "64KB": KB could mean powers of 1000 or of 1024; use KiB, MiB or GiB`},
		},
		{
			name: "size with unit in the wrong case",
			in:   "[cluster.receiver]\nmax_frame = \"16mib\"\n",
			want: []string{`cluster.receiver.max_frame: "16mib": write the unit as "MiB"; units are case-sensitive`},
		},
		{
			name: "size with unknown unit",
			in:   "[cluster.receiver]\nmax_frame = \"1TiB\"\n",
			want: []string{`cluster.receiver.max_frame: "1TiB": unknown unit "TiB"; use B, KiB, MiB or GiB`},
		},
		{
			name: "size with a space",
			in:   "[cluster.receiver]\nmax_frame = \"16 MiB\"\n",
			want: []string{`cluster.receiver.max_frame: "16 MiB": write the unit without a space`},
		},
		{
			name: "size not a number",
			in:   "[cluster.receiver]\nmax_frame = \"big\"\n",
			want: []string{`server.toml:2: cluster.receiver.max_frame: "big" is not a size; want a whole number of bytes with an optional unit B, KiB, MiB or GiB, such as "16MiB", "512B" or "1024"`},
		},
		{
			name: "size negative",
			in:   "[cluster.receiver]\nmax_frame = \"-1MiB\"\n",
			want: []string{`cluster.receiver.max_frame: "-1MiB" is negative; want a whole number of bytes`},
		},
		{
			name: "size negative integer",
			in:   "[cluster.receiver]\nmax_frame = -1024\n",
			want: []string{`server.toml:2: cluster.receiver.max_frame: -1024 is negative; want a whole number of bytes`},
		},
		{
			name: "size fraction that is whole bytes",
			in:   "[cluster.receiver]\nmax_frame = \"1.5MiB\"\n",
			want: []string{`cluster.receiver.max_frame: "1.5MiB": fractions are not allowed; write "1536KiB"`},
		},
		{
			name: "size fraction of a byte",
			in:   "[cluster.receiver]\nmax_frame = \"1.5B\"\n",
			want: []string{`cluster.receiver.max_frame: "1.5B": fractions are not allowed; want a whole number of bytes`},
		},
		{
			name: "size overflows",
			in:   "[cluster.sender]\nqueue_limit = \"8589934592GiB\"\n",
			want: []string{`cluster.sender.queue_limit: "8589934592GiB" is too large`},
		},
		{
			name: "size float",
			in:   "[cluster.receiver]\nmax_frame = 1.5\n",
			want: []string{`server.toml:2: cluster.receiver.max_frame: found float 1.5; want a string such as "16MiB" or an integer number of bytes`},
		},
		{
			name: "size boolean",
			in:   "[cluster.sender]\nqueue_limit = true\n",
			want: []string{`cluster.sender.queue_limit: found boolean true; want a string such as "64MiB" or an integer number of bytes`},
		},
		{
			name: "max_frame too small",
			in:   "[cluster.receiver]\nmax_frame = \"512B\"\n",
			want: []string{`server.toml:2: cluster.receiver.max_frame: 512B is out of range; allowed 1KiB..1GiB`},
		},
		{
			name: "max_frame integer too small",
			in:   "[cluster.receiver]\nmax_frame = 1023\n",
			want: []string{`cluster.receiver.max_frame: 1023B is out of range; allowed 1KiB..1GiB`},
		},
		{
			name: "max_frame too big",
			in:   "[cluster.receiver]\nmax_frame = \"2GiB\"\n",
			want: []string{`cluster.receiver.max_frame: 2GiB is out of range; allowed 1KiB..1GiB`},
		},
		{
			name: "max_frame zero",
			in:   "[cluster.receiver]\nmax_frame = \"0\"\n",
			want: []string{`cluster.receiver.max_frame: 0B is out of range; allowed 1KiB..1GiB`},
		},
		{
			name: "queue_limit too small",
			in:   "[cluster.sender]\nqueue_limit = \"63KiB\"\n",
			want: []string{`server.toml:2: cluster.sender.queue_limit: 63KiB is out of range; allowed 64KiB..16GiB`},
		},
		{
			name: "queue_limit too big",
			in:   "[cluster.sender]\nqueue_limit = 17179869185\n",
			want: []string{`cluster.sender.queue_limit: 17179869185B is out of range; allowed 64KiB..16GiB`},
		},

		// Receiver and sender timing.
		{
			name: "idle_timeout too short",
			in:   "[cluster.receiver]\nidle_timeout = \"500ms\"\n",
			want: []string{`server.toml:2: cluster.receiver.idle_timeout: 500ms is too short; allowed at least 1s`},
		},
		{
			name: "idle_timeout zero",
			in:   "[cluster.receiver]\nidle_timeout = \"0s\"\n",
			want: []string{`cluster.receiver.idle_timeout: 0s is too short; allowed at least 1s`},
		},
		{
			name: "sender timeout zero",
			in:   "[cluster.sender]\ntimeout = \"0s\"\n",
			want: []string{`server.toml:2: cluster.sender.timeout: 0s must be greater than 0`},
		},
		{
			name: "sender timeout too long",
			in:   "[cluster.sender]\ntimeout = \"11m\"\n",
			want: []string{`cluster.sender.timeout: 11m0s is too long; allowed at most 10m0s`},
		},
		{
			name: "sender timeout integer",
			in:   "[cluster.sender]\ntimeout = 3\n",
			want: []string{`cluster.sender.timeout: found integer 3; want a string such as "3s"`},
		},
		{
			name: "max_retries negative",
			in:   "[cluster.sender]\nmax_retries = -1\n",
			want: []string{`server.toml:2: cluster.sender.max_retries: -1 is out of range; allowed 0..10`},
		},
		{
			name: "max_retries too large",
			in:   "[cluster.sender]\nmax_retries = 11\n",
			want: []string{`cluster.sender.max_retries: 11 is out of range; allowed 0..10`},
		},
		{
			name: "max_retries string",
			in:   "[cluster.sender]\nmax_retries = \"1\"\n",
			want: []string{`cluster.sender.max_retries: found string "1"; want an integer such as 1`},
		},
		{
			name: "unknown sender key",
			in:   "[cluster.sender]\nmax_retires = 2\n",
			want: []string{`server.toml:2: unknown key "cluster.sender.max_retires" (did you mean "cluster.sender.max_retries"?)`},
		},

		// Session manager.
		{
			name: "manager mode",
			in:   "[cluster.manager]\nmode = \"owner\"\n",
			want: []string{`server.toml:2: cluster.manager.mode: "owner" is not supported; allowed: "delta", "backup"`},
		},
		{
			name: "unsupported manager mode",
			in:   "[cluster.manager]\nmode = \"other\"\n",
			want: []string{`server.toml:2: cluster.manager.mode: "other" is not supported; allowed: "delta"`},
		},
		{
			name: "manager mode is case-sensitive",
			in:   "[cluster.manager]\nmode = \"Delta\"\n",
			want: []string{`cluster.manager.mode: "Delta" is not supported; allowed: "delta"`},
		},
		{
			name: "session_timeout too short",
			in:   "[cluster.manager]\nsession_timeout = \"999ms\"\n",
			want: []string{`server.toml:2: cluster.manager.session_timeout: 999ms is out of range; allowed 1s..720h0m0s`},
		},
		{
			name: "session_timeout too long",
			in:   "[cluster.manager]\nsession_timeout = \"721h\"\n",
			want: []string{`cluster.manager.session_timeout: 721h0m0s is out of range; allowed 1s..720h0m0s`},
		},
		{
			name: "session_timeout integer",
			in:   "[cluster.manager]\nsession_timeout = 1800\n",
			want: []string{`server.toml:2: cluster.manager.session_timeout: found integer 1800; want a string such as "30m0s"`},
		},
		{
			name: "max_active negative",
			in:   "[cluster.manager]\nmax_active = -1\n",
			want: []string{`server.toml:2: cluster.manager.max_active: -1 is out of range; allowed 0 (no limit) or more`},
		},
		{
			name: "unsupported replication",
			in:   "[cluster.manager]\nreplication = \"fast\"\n",
			want: []string{`server.toml:2: cluster.manager.replication: "fast" is not supported; allowed: "async", "ack", "sync"`},
		},
		{
			name: "state_transfer_timeout negative",
			in:   "[cluster.manager]\nstate_transfer_timeout = \"-1s\"\n",
			want: []string{`server.toml:2: cluster.manager.state_transfer_timeout: -1s must not be negative ("0s": do not wait)`},
		},
		{
			name: "expire_interval too short",
			in:   "[cluster.manager]\nexpire_interval = \"9ms\"\n",
			want: []string{`server.toml:2: cluster.manager.expire_interval: 9ms is out of range; allowed 10ms..1m0s`},
		},
		{
			name: "expire_interval too long",
			in:   "[cluster.manager]\nexpire_interval = \"61s\"\n",
			want: []string{`cluster.manager.expire_interval: 1m1s is out of range; allowed 10ms..1m0s`},
		},
		{
			name: "anti_entropy_interval too short",
			in:   "[cluster.manager]\nanti_entropy_interval = \"10ms\"\n",
			want: []string{`server.toml:2: cluster.manager.anti_entropy_interval: 10ms is out of range; allowed 100ms..1h0m0s`},
		},
		{
			name: "receiver on a network without a key",
			in:   "[cluster.receiver]\nhost = \"198.51.100.10\"\n",
			want: []string{`server.toml:2: cluster.receiver.host: 198.51.100.10 is not loopback, and [cluster.security] sets no key`},
		},
		{
			name: "heartbeats on a network without a key",
			in:   "[cluster.membership]\nbind = \"198.51.100.10\"\n",
			want: []string{`server.toml:2: cluster.membership.bind: 198.51.100.10 is not loopback, and [cluster.security] sets no key`},
		},
		{
			name: "key not base64",
			in:   "[cluster.security]\nkeys = [\"not a key\"]\n",
			want: []string{`server.toml:2: cluster.security.keys: invalid key: key 1 is not base64`},
		},
		{
			name: "key too short",
			in:   "[cluster.security]\nkeys = [\"" + testKey + "\", \"AAAA\"]\n",
			want: []string{`server.toml:2: cluster.security.keys: invalid key: key 2 has 3 bytes, need 32`},
		},
		{
			name: "keys and key_file",
			in:   "[cluster.security]\nkeys = [\"" + testKey + "\"]\nkey_file = \"keys\"\n",
			want: []string{`server.toml:3: cluster.security.key_file: set keys or key_file, not both`},
		},
		{
			name: "insecure with a key",
			in:   "[cluster.security]\nkey_file = \"keys\"\ninsecure = true\n",
			want: []string{`server.toml:3: cluster.security.insecure: insecure = true with a key`},
		},
		{
			name: "clock skew below the heartbeat frequency",
			in:   "[cluster.membership]\nfrequency = \"2s\"\ndrop_time = \"6s\"\n[cluster.security]\nkey_file = \"keys\"\nmax_clock_skew = \"1s\"\n",
			want: []string{`server.toml:6: cluster.security.max_clock_skew: 1s must be at least frequency (2s)`},
		},
		{
			name: "tls without key and ca",
			in:   "[cluster.tls]\ncert = \"node1.pem\"\n",
			want: []string{`cluster.tls.ca: missing`, `cluster.tls.key: missing`},
		},
		{
			name: "touch_interval too short",
			in:   "[cluster.manager]\ntouch_interval = \"99ms\"\n",
			want: []string{`server.toml:2: cluster.manager.touch_interval: 99ms is too short; allowed at least 100ms`},
		},
		{
			name: "touch_interval longer than session_timeout/4",
			in:   "[cluster.manager]\ntouch_interval = \"8m\"\n",
			want: []string{`server.toml:2: cluster.manager.touch_interval: 8m0s must be at most session_timeout/4 (7m30s), so that no copy of a session expires while it is in use on another node`},
		},
		{
			name: "default touch_interval longer than session_timeout/4 points at session_timeout",
			in:   "[cluster.manager]\nmode = \"delta\"\nsession_timeout = \"10s\"\n",
			want: []string{`server.toml:3: cluster.manager.touch_interval: 5s must be at most session_timeout/4 (2.5s)`},
		},
		{
			name: "touch_interval not compared with an invalid session_timeout",
			in:   "[cluster.manager]\nsession_timeout = \"0s\"\n",
			want: []string{`server.toml:2: cluster.manager.session_timeout: 0s is out of range`},
		},
		{
			name: "touch_interval not compared with a mistyped session_timeout",
			in:   "[cluster.manager]\nsession_timeout = \"10s\"\ntouch_interval = 5\n",
			want: []string{`server.toml:3: cluster.manager.touch_interval: found integer 5; want a string such as "5s"`},
		},
		{
			name: "string for a boolean",
			in:   "[cluster.manager]\nalways_save = \"true\"\n",
			want: []string{`server.toml:2: cluster.manager.always_save: found string "true"; want a boolean, true or false (without quotes)`},
		},
		{
			name: "integer for a boolean",
			in:   "[cluster.manager]\nnotify_listeners_on_replication = 1\n",
			want: []string{`server.toml:2: cluster.manager.notify_listeners_on_replication: found integer 1; want a boolean, true or false`},
		},
		{
			name: "boolean for an integer",
			in:   "[cluster.manager]\nmax_active = false\n",
			want: []string{`server.toml:2: cluster.manager.max_active: found boolean false; want an integer such as 100000`},
		},
		{
			name: "unknown manager key",
			in:   "[cluster.manager]\nmax_actve = 10\n",
			want: []string{`server.toml:2: unknown key "cluster.manager.max_actve" (did you mean "cluster.manager.max_active"?)`},
		},

		// Session cookie.
		{
			name: "cookie name with a space",
			in:   "[session]\ncookie_name = \"a b\"\n",
			want: []string{"server.toml:2: session.cookie_name: \"a b\" contains ' ', which a cookie name (an RFC 6265 token) cannot; allowed: ASCII letters, digits and !#$%&'*+-.^_`|~"},
		},
		{
			name: "empty cookie name",
			in:   "[session]\ncookie_name = \"\"\n",
			want: []string{`server.toml:2: session.cookie_name: must not be empty`},
		},
		{
			name: "cookie name with a separator",
			in:   "[session]\ncookie_name = \"SESSION=ID\"\n",
			want: []string{`session.cookie_name: "SESSION=ID" contains '='`},
		},
		{
			name: "cookie name not ASCII",
			in:   "[session]\ncookie_name = \"sessión\"\n",
			want: []string{`session.cookie_name: "sessión" contains 'ó', which a cookie name`},
		},
		{
			name: "cookie path not starting with a slash",
			in:   "[session]\ncookie_path = \"x\"\n",
			want: []string{`server.toml:2: session.cookie_path: "x" must start with "/", such as "/" or "/app"`},
		},
		{
			name: "empty cookie path",
			in:   "[session]\ncookie_path = \"\"\n",
			want: []string{`session.cookie_path: "" must start with "/"`},
		},
		{
			name: "cookie path with a semicolon",
			in:   "[session]\ncookie_path = \"/app;x\"\n",
			want: []string{`session.cookie_path: "/app;x" contains ';'; allowed: printable ASCII other than ';'`},
		},
		{
			name: "cookie domain not a domain",
			in:   "[session]\ncookie_domain = \"example..com\"\n",
			want: []string{`server.toml:2: session.cookie_domain: "example..com" is not a domain name; want a name such as "example.com", or "" for the host only`},
		},
		{
			name: "cookie domain with a port",
			in:   "[session]\ncookie_domain = \"example.com:8080\"\n",
			want: []string{`session.cookie_domain: "example.com:8080" is not a domain name`},
		},
		{
			name: "same_site in lower case",
			in:   "[session]\ncookie_same_site = \"none\"\n",
			want: []string{`server.toml:2: session.cookie_same_site: "none" is not supported; write "None" (values are case-sensitive); allowed: "Lax", "Strict", "None" or "" (no attribute)`},
		},
		{
			name: "unsupported same_site",
			in:   "[session]\ncookie_same_site = \"Bogus\"\n",
			want: []string{`server.toml:2: session.cookie_same_site: "Bogus" is not supported; allowed: "Lax", "Strict", "None" or "" (no attribute)`},
		},
		{
			name: "same_site None without secure",
			in:   "[session]\ncookie_same_site = \"None\"\n",
			want: []string{`server.toml:2: session.cookie_same_site: "None" requires session.cookie_secure = true; browsers reject a SameSite=None cookie that is not Secure`},
		},
		{
			name: "same_site None with secure false written",
			in:   "[session]\ncookie_secure = false\ncookie_same_site = \"None\"\n",
			want: []string{`server.toml:3: session.cookie_same_site: "None" requires session.cookie_secure = true`},
		},
		{
			name: "secure turned off under default None points at secure",
			in:   "[session]\ncookie_name = \"SID\"\ncookie_same_site = \"None\"\n",
			want: []string{`server.toml:3: session.cookie_same_site: "None" requires`},
		},
		{
			name: "same_site None not compared with a mistyped secure",
			in:   "[session]\ncookie_secure = \"true\"\ncookie_same_site = \"None\"\n",
			want: []string{`server.toml:2: session.cookie_secure: found string "true"; want a boolean, true or false (without quotes)`},
		},
		{
			name: "bad static_filter",
			in:   "[session]\nstatic_filter = \"(\"\n",
			want: []string{"server.toml:2: session.static_filter: \"(\" is not a Go regular expression: error parsing regexp: missing closing ): `(`"},
		},
		{
			name: "static_filter with a Perl lookahead",
			in:   "[session]\nstatic_filter = '^/(?!api)'\n",
			want: []string{`session.static_filter: "^/(?!api)" is not a Go regular expression: error parsing regexp: invalid or unsupported Perl syntax`},
		},
		{
			name: "session not a table",
			in:   "session = \"FLOCKSESSIONID\"\n",
			want: []string{`server.toml:1: session: found string "FLOCKSESSIONID"; want a table`},
		},
		{
			name: "unknown session key",
			in:   "[session]\ncookie_same_sites = \"Lax\"\n",
			want: []string{`server.toml:2: unknown key "session.cookie_same_sites" (did you mean "session.cookie_same_site"?)`},
		},
		{
			name: "manager and session problems in file order",
			in: `[session]
cookie_name = "a b"
cookie_same_site = "Bogus"

[cluster.manager]
mode = "mirror"
replication = "fast"
max_active = -5
`,
			want: []string{
				`server.toml:2: session.cookie_name: "a b" contains ' '`,
				`server.toml:3: session.cookie_same_site: "Bogus" is not supported`,
				`server.toml:6: cluster.manager.mode: "mirror" is not supported`,
				`server.toml:7: cluster.manager.replication: "fast" is not supported`,
				`server.toml:8: cluster.manager.max_active: -5 is out of range`,
			},
		},

		// Several problems, all reported in file order.
		{
			name: "several problems",
			in: `[server]
name = "node.1"
colour = "blue"

[cluster.membership]
ttl = 300
port = "x"
frequency = "fast"
`,
			want: []string{
				`server.toml:2: server.name: "node.1" is not allowed`,
				`server.toml:3: unknown key "server.colour"`,
				`server.toml:6: cluster.membership.ttl: 300 is out of range; allowed 0..255`,
				`server.toml:7: cluster.membership.port: found string "x"; want an integer such as 45564`,
				`server.toml:8: cluster.membership.frequency: "fast" is not a duration`,
			},
		},
		{
			name: "several problems on one line",
			in:   "cluster.membership = { ttl = 300, port = 0 }\n",
			want: []string{
				`server.toml:1: cluster.membership.port: 0 is out of range`,
				`server.toml:1: cluster.membership.ttl: 300 is out of range`,
			},
		},
		{
			name: "mistyped frequency is not compared with drop_time",
			in:   "[cluster.membership]\nfrequency = 2\ndrop_time = \"600ms\"\n",
			want: []string{`server.toml:2: cluster.membership.frequency: found integer 2`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in), "server.toml")
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want errors %q", c, tt.want)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("Parse returned %+v with its error; want the zero Config", c)
			}
			got := problems(err)
			if len(got) != len(tt.want) {
				t.Fatalf("Parse reported %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, want := range tt.want {
				if !strings.Contains(got[i], want) {
					t.Errorf("problem %d:\n got: %s\nwant: …%s…", i, got[i], want)
				}
			}
		})
	}
}

// problems splits an error from Parse or Validate into its messages.
func problems(err error) []string {
	var errs []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	} else {
		errs = []error{err}
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return msgs
}

func TestParseErrorPrefix(t *testing.T) {
	in := []byte("[cluster.membership]\nttl = 300\n")
	tests := []struct {
		file string
		want string
	}{
		{"/etc/flock/server.toml", "/etc/flock/server.toml:2: cluster.membership.ttl: "},
		{"", "line 2: cluster.membership.ttl: "},
	}
	for _, tt := range tests {
		_, err := Parse(in, tt.file)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Parse(_, %q) = %v, want prefix %q", tt.file, err, tt.want)
		}
	}
}

func TestSyntaxErrorUnwrapsToParseError(t *testing.T) {
	_, err := Parse([]byte("a = = 1"), "server.toml")
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("Parse error %v (%T) does not wrap a toml.ParseError", err, err)
	}
	if strings.Contains(err.Error(), "toml: line") {
		t.Errorf("error repeats the library's position: %v", err)
	}
}

// TestParseValid checks inputs that must be accepted, including partial
// files, which keep the defaults of the keys they leave out.
func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want func(*Config) // applied to Default()
	}{
		{"empty file", "", func(*Config) {}},
		{
			name: "Go-native sessions",
			in:   "[cluster.manager]\nsession_lifetime = \"24h\"\n[session]\nid_header = \"Mcp-Session-Id\"\ncookie_persist = true\n",
			want: func(c *Config) {
				c.Cluster.Manager.SessionLifetime = Duration{24 * time.Hour}
				c.Session.IDHeader, c.Session.CookiePersist = "Mcp-Session-Id", true
			},
		},
		{"only comments", "# nothing\n\n", func(*Config) {}},
		{"empty tables", "[server]\n[cluster]\n[cluster.membership]\n[cluster.receiver]\n", func(*Config) {}},
		{
			name: "one key",
			in:   "[cluster.membership]\nport = 45600\n",
			want: func(c *Config) { c.Cluster.Membership.Port = 45600 },
		},
		{
			name: "dotted keys",
			in:   "server.name = \"node2\"\ncluster.receiver.port = 4100\n",
			want: func(c *Config) { c.Server.Name = "node2"; c.Cluster.Receiver.Port = 4100 },
		},
		{
			name: "inline table",
			in:   "[cluster]\nreceiver = { host = \"10.0.0.5\", auto_bind = 1 }\nsecurity = { insecure = true }\n",
			want: func(c *Config) {
				c.Cluster.Receiver.Host = "10.0.0.5"
				c.Cluster.Receiver.AutoBind = 1
				c.Cluster.Security.Insecure = true
			},
		},
		{
			name: "real cluster",
			in:   "[cluster.membership]\nbind = \"10.0.0.5\"\n[cluster.receiver]\nhost = \"10.0.0.5\"\n[cluster.security]\nkeys = [\"" + testKey + "\"]\n",
			want: func(c *Config) {
				c.Cluster.Membership.Bind = "10.0.0.5"
				c.Cluster.Receiver.Host = "10.0.0.5"
				c.Cluster.Security.Keys = []string{testKey}
			},
		},
		{
			name: "IPv6",
			in:   "[server]\nhttp = \"[::1]:8080\"\n[cluster.receiver]\nhost = \"fe80::1%eth0\"\n[cluster.security]\nkey_file = \"/etc/flock/keys\"\n",
			want: func(c *Config) {
				c.Server.HTTP = "[::1]:8080"
				c.Cluster.Receiver.Host = "fe80::1%eth0"
				c.Cluster.Security.KeyFile = "/etc/flock/keys"
			},
		},
		{
			name: "http on all interfaces",
			in:   "server.http = \":8080\"\n",
			want: func(c *Config) { c.Server.HTTP = ":8080" },
		},
		{
			name: "http hostname",
			in:   "server.http = \"flock-1.example.com:80\"\n",
			want: func(c *Config) { c.Server.HTTP = "flock-1.example.com:80" },
		},
		{
			name: "limits",
			in: `[server]
name = "` + strings.Repeat("n", 63) + `"
[cluster]
domain = "` + strings.Repeat("~", 64) + `"
[cluster.membership]
port = 65535
frequency = "1m"
drop_time = "2m"
ttl = 0
[cluster.receiver]
port = 64536
auto_bind = 1000
`,
			want: func(c *Config) {
				c.Server.Name = strings.Repeat("n", 63)
				c.Cluster.Domain = strings.Repeat("~", 64)
				c.Cluster.Membership.Port = 65535
				c.Cluster.Membership.Frequency = Duration{time.Minute}
				c.Cluster.Membership.DropTime = Duration{2 * time.Minute}
				c.Cluster.Membership.TTL = 0
				c.Cluster.Receiver.Port = 64536
				c.Cluster.Receiver.AutoBind = 1000
			},
		},
		{
			name: "static",
			in: `[cluster.membership]
type = "static"
probe_timeout = "3s"

[cluster.membership.static]
members = [
  "198.51.100.10:4000", # this node: skipped by membership
  "198.51.100.11:4001",
  "[2001:db8::10]:4000",
  "[fe80::1%eth0]:4000",
]

[cluster.receiver]
host = "198.51.100.10"

[cluster.security]
insecure = true
`,
			want: func(c *Config) {
				c.Cluster.Security.Insecure = true
				c.Cluster.Membership.Type = "static"
				c.Cluster.Membership.ProbeTimeout = Duration{3 * time.Second}
				c.Cluster.Membership.Static.Members = []string{
					"198.51.100.10:4000", "198.51.100.11:4001", "[2001:db8::10]:4000", "[fe80::1%eth0]:4000",
				}
				c.Cluster.Receiver.Host = "198.51.100.10"
			},
		},
		{
			name: "members with multicast are allowed",
			in:   "cluster.membership.static.members = [\"198.51.100.10:4000\"]\n",
			want: func(c *Config) { c.Cluster.Membership.Static.Members = []string{"198.51.100.10:4000"} },
		},
		{
			name: "same IP, different ports",
			in:   "cluster.membership.static.members = [\"127.0.0.1:4000\", \"127.0.0.1:4001\"]\n",
			want: func(c *Config) { c.Cluster.Membership.Static.Members = []string{"127.0.0.1:4000", "127.0.0.1:4001"} },
		},
		{
			name: "integer max_frame",
			in:   "[cluster.receiver]\nmax_frame = 1048576\n",
			want: func(c *Config) { c.Cluster.Receiver.MaxFrame = Size{1 << 20} },
		},
		{
			name: "sizes in bytes and units",
			in:   "[cluster.receiver]\nmax_frame = \"1024\"\n[cluster.sender]\nqueue_limit = \"65536B\"\n",
			want: func(c *Config) {
				c.Cluster.Receiver.MaxFrame = Size{1024}
				c.Cluster.Sender.QueueLimit = Size{64 << 10}
			},
		},
		{
			name: "new keys at their limits, low",
			in: `[cluster.membership]
probe_timeout = "0s"
[cluster.receiver]
max_frame = "1KiB"
idle_timeout = "1s"
[cluster.sender]
timeout = "1ns"
max_retries = 0
queue_limit = "64KiB"
`,
			want: func(c *Config) {
				c.Cluster.Membership.ProbeTimeout = Duration{0}
				c.Cluster.Receiver.MaxFrame = Size{1 << 10}
				c.Cluster.Receiver.IdleTimeout = Duration{time.Second}
				c.Cluster.Sender.Timeout = Duration{1}
				c.Cluster.Sender.MaxRetries = 0
				c.Cluster.Sender.QueueLimit = Size{64 << 10}
			},
		},
		{
			name: "new keys at their limits, high",
			in: `[cluster.membership]
probe_timeout = "3s"
[cluster.receiver]
max_frame = "1GiB"
idle_timeout = "24h"
[cluster.sender]
timeout = "10m"
max_retries = 10
queue_limit = "16GiB"
`,
			want: func(c *Config) {
				c.Cluster.Membership.ProbeTimeout = Duration{3 * time.Second}
				c.Cluster.Receiver.MaxFrame = Size{1 << 30}
				c.Cluster.Receiver.IdleTimeout = Duration{24 * time.Hour}
				c.Cluster.Sender.Timeout = Duration{10 * time.Minute}
				c.Cluster.Sender.MaxRetries = 10
				c.Cluster.Sender.QueueLimit = Size{16 << 30}
			},
		},
		{
			name: "manager and session, every key",
			in: `[cluster.manager]
mode = "delta"
placement = "ring"
session_timeout = "2h"
max_active = 10000
max_session_size = "64KiB"
replication = "ack"
state_transfer_timeout = "0s"
always_save = true
notify_listeners_on_replication = false
expire_interval = "250ms"
touch_interval = "30m"
sync_min_copies = 2
anti_entropy_interval = "0s"

[session]
cookie_name = "JSESSIONID"
cookie_path = "/app"
cookie_domain = ".example.com"
cookie_secure = true
cookie_http_only = false
cookie_same_site = "None"
static_filter = ""
`,
			want: func(c *Config) {
				c.Cluster.Manager = Manager{
					Mode:                         "delta",
					Placement:                    "ring",
					SessionTimeout:               Duration{2 * time.Hour},
					MaxActive:                    10000,
					MaxSessionSize:               Size{64 << 10},
					Replication:                  "ack",
					StateTransferTimeout:         Duration{0},
					AlwaysSave:                   true,
					NotifyListenersOnReplication: false,
					ExpireInterval:               Duration{250 * time.Millisecond},
					TouchInterval:                Duration{30 * time.Minute},
					SyncMinCopies:                2,
					AntiEntropyInterval:          Duration{0},
				}
				c.Session = Session{
					CookieName:     "JSESSIONID",
					CookiePath:     "/app",
					CookieDomain:   ".example.com",
					CookieSecure:   true,
					CookieHTTPOnly: false,
					CookieSameSite: "None",
					StaticFilter:   "",
				}
			},
		},
		{
			name: "manager at its limits, low",
			in: `[cluster.manager]
session_timeout = "1s"
expire_interval = "10ms"
touch_interval = "100ms"
`,
			want: func(c *Config) {
				c.Cluster.Manager.SessionTimeout = Duration{time.Second}
				c.Cluster.Manager.ExpireInterval = Duration{10 * time.Millisecond}
				c.Cluster.Manager.TouchInterval = Duration{100 * time.Millisecond}
			},
		},
		{
			name: "manager at its limits, high",
			in:   "cluster.manager = { session_timeout = \"720h\", expire_interval = \"1m\", touch_interval = \"180h\", replication = \"async\" }\n",
			want: func(c *Config) {
				c.Cluster.Manager.SessionTimeout = Duration{720 * time.Hour}
				c.Cluster.Manager.ExpireInterval = Duration{time.Minute}
				c.Cluster.Manager.TouchInterval = Duration{180 * time.Hour}
				c.Cluster.Manager.Replication = "async"
			},
		},
		{
			name: "cookie variants",
			in:   "[session]\ncookie_name = \"__Host-sid!#$%&'*+-.^_`|~\"\ncookie_domain = \"192.0.2.1\"\ncookie_same_site = \"\"\nstatic_filter = '^/static/'\n",
			want: func(c *Config) {
				c.Session.CookieName = "__Host-sid!#$%&'*+-.^_`|~"
				c.Session.CookieDomain = "192.0.2.1"
				c.Session.CookieSameSite = ""
				c.Session.StaticFilter = "^/static/"
			},
		},
		{
			name: "same_site Strict",
			in:   "session.cookie_same_site = \"Strict\"\n",
			want: func(c *Config) { c.Session.CookieSameSite = "Strict" },
		},
		{
			name: "drop_time exactly twice frequency",
			in:   "[cluster.membership]\nfrequency = \"1s\"\ndrop_time = \"2s\"\nttl = 255\n",
			want: func(c *Config) {
				c.Cluster.Membership.Frequency = Duration{time.Second}
				c.Cluster.Membership.DropTime = Duration{2 * time.Second}
				c.Cluster.Membership.TTL = 255
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in), "server.toml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Cluster.Membership.TTL = 256
	c.Server.Name = "a.b"
	c.Cluster.Receiver.Port = 0
	c.Cluster.Membership.Static.Members = []string{"198.51.100.10:4000", "198.51.100.10"}
	err := c.Validate()
	want := []string{
		`server.name: "a.b" is not allowed`,
		`cluster.membership.ttl: 256 is out of range; allowed 0..255`,
		`cluster.membership.static.members[1]: "198.51.100.10" is not IP:port`,
		`cluster.receiver.port: 0 is out of range; allowed 1..65535`,
	}
	got := problems(err)
	if len(got) != len(want) {
		t.Fatalf("Validate() = %v; want %d problems", err, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestMembershipTypes(t *testing.T) {
	for _, typ := range membershipTypes {
		c := Default()
		c.Cluster.Membership.Type = typ
		c.Cluster.Membership.Static.Members = []string{"198.51.100.10:4000"}
		c.Cluster.Membership.DNS.Name = "flock.default.svc.cluster.local"
		if err := c.Validate(); err != nil {
			t.Errorf("type %q: %v", typ, err)
		}
	}
}

func TestAccessors(t *testing.T) {
	c := Default()
	if got, err := c.Cluster.Membership.Group(); err != nil || got != netip.MustParseAddrPort("228.0.0.4:45564") {
		t.Errorf("Group() = %v, %v; want 228.0.0.4:45564", got, err)
	}
	if got, err := c.Cluster.Membership.BindAddr(); err != nil || got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("BindAddr() = %v, %v; want 127.0.0.1", got, err)
	}
	if got, err := c.Cluster.Receiver.HostAddr(); err != nil || got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("HostAddr() = %v, %v; want 127.0.0.1", got, err)
	}

	c.Cluster.Membership.Address = "10.0.0.1"
	c.Cluster.Membership.Bind = "0.0.0.0"
	c.Cluster.Receiver.Host = ""
	if _, err := c.Cluster.Membership.Group(); err == nil || !strings.HasPrefix(err.Error(), "cluster.membership.address: ") {
		t.Errorf("Group() of a unicast address: err = %v", err)
	}
	c.Cluster.Membership.Address = "228.0.0.4"
	c.Cluster.Membership.Port = 0
	if _, err := c.Cluster.Membership.Group(); err == nil || !strings.HasPrefix(err.Error(), "cluster.membership.port: ") {
		t.Errorf("Group() with port 0: err = %v", err)
	}
	if _, err := c.Cluster.Membership.BindAddr(); err == nil || !strings.HasPrefix(err.Error(), "cluster.membership.bind: ") {
		t.Errorf("BindAddr() of 0.0.0.0: err = %v", err)
	}
	if _, err := c.Cluster.Receiver.HostAddr(); err == nil || !strings.HasPrefix(err.Error(), "cluster.receiver.host: ") {
		t.Errorf("HostAddr() of \"\": err = %v", err)
	}
}

func TestSessionFilter(t *testing.T) {
	re, err := Default().Session.Filter()
	if err != nil || re == nil {
		t.Fatalf("Filter() of the default = %v, %v", re, err)
	}
	for path, want := range map[string]bool{
		"/app.css":          true,
		"/js/main.js":       true,
		"/img/a.jpeg":       true,
		"/img/a.jpg":        true,
		"/font.woff2":       true,
		"/main.js.map":      true,
		"/cart":             false,
		"/css":              false,
		"/app.css/checkout": false,
		"/acss":             false,
	} {
		if got := re.MatchString(path); got != want {
			t.Errorf("default filter matches %q = %v, want %v", path, got, want)
		}
	}

	if re, err := (Session{StaticFilter: ""}).Filter(); re != nil || err != nil {
		t.Errorf("Filter() of \"\" = %v, %v; want nil, nil", re, err)
	}
	if _, err := (Session{StaticFilter: "("}).Filter(); err == nil || !strings.HasPrefix(err.Error(), "session.static_filter: ") {
		t.Errorf("Filter() of \"(\": err = %v", err)
	}
}

func TestSessionSameSite(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want http.SameSite
	}{
		{"Lax", http.SameSiteLaxMode},
		{"Strict", http.SameSiteStrictMode},
		{"None", http.SameSiteNoneMode},
		{"", 0},
	} {
		got, err := Session{CookieSameSite: tt.in}.SameSite()
		if err != nil || got != tt.want {
			t.Errorf("SameSite() of %q = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	// 0 means no attribute, as written by net/http.
	c := &http.Cookie{Name: "FLOCKSESSIONID", Value: "x", SameSite: 0}
	if s := c.String(); strings.Contains(s, "SameSite") {
		t.Errorf("a cookie with SameSite 0 is written %q; want no SameSite attribute", s)
	}
	for _, in := range []string{"lax", "none", "Bogus", " Lax"} {
		if got, err := (Session{CookieSameSite: in}).SameSite(); err == nil || !strings.HasPrefix(err.Error(), "session.cookie_same_site: ") {
			t.Errorf("SameSite() of %q = %v, %v; want an error naming the key", in, got, err)
		}
	}
}

// TestSessionCookieIsValid checks that what Validate accepts, net/http
// writes as it is.
func TestSessionCookieIsValid(t *testing.T) {
	for _, s := range []Session{
		Default().Session,
		{CookieName: "__Host-sid!#$%&'*+-.^_`|~", CookiePath: "/a b/~", CookieDomain: ".example.com", CookieSameSite: "Strict"},
		{CookieName: "SID", CookiePath: "/", CookieDomain: "192.0.2.1", CookieSecure: true, CookieSameSite: "None"},
	} {
		c := Default()
		c.Session = s
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", s, err)
			continue
		}
		mode, err := s.SameSite()
		if err != nil {
			t.Fatal(err)
		}
		cookie := &http.Cookie{Name: s.CookieName, Value: "id", Path: s.CookiePath, Domain: s.CookieDomain,
			Secure: s.CookieSecure, HttpOnly: s.CookieHTTPOnly, SameSite: mode}
		if err := cookie.Valid(); err != nil {
			t.Errorf("cookie from %+v: %v", s, err)
		}
	}
}

func TestStaticAddrs(t *testing.T) {
	tests := []struct {
		members []string
		want    []netip.AddrPort
		errs    []string // the i'th problem must start with errs[i]
	}{
		{members: nil, want: []netip.AddrPort{}},
		{members: []string{}, want: []netip.AddrPort{}},
		{
			members: []string{"198.51.100.10:4000", "[2001:db8::10]:4001", "[::ffff:198.51.100.11]:4000", "[fe80::1%eth0]:4000"},
			want: []netip.AddrPort{
				netip.MustParseAddrPort("198.51.100.10:4000"),
				netip.MustParseAddrPort("[2001:db8::10]:4001"),
				netip.MustParseAddrPort("198.51.100.11:4000"), // unmapped
				netip.MustParseAddrPort("[fe80::1%eth0]:4000"),
			},
		},
		{
			members: []string{"198.51.100.10:4000", "host:0", "198.51.100.10:4000", "198.51.100.12"},
			errs: []string{
				`cluster.membership.static.members[1]: port "0" in "host:0" is not a port number`,
				`cluster.membership.static.members[2]: "198.51.100.10:4000" is already listed as members[0]`,
				`cluster.membership.static.members[3]: "198.51.100.12" is not IP:port`,
			},
		},
	}
	for _, tt := range tests {
		got, err := Static{Members: tt.members}.Addrs()
		if tt.errs == nil {
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("Addrs(%q) = %v, %v; want %v", tt.members, got, err, tt.want)
			}
			continue
		}
		if got != nil {
			t.Errorf("Addrs(%q) = %v with error; want nil", tt.members, got)
		}
		msgs := problems(err)
		if len(msgs) != len(tt.errs) {
			t.Errorf("Addrs(%q): %v; want %d problems", tt.members, err, len(tt.errs))
			continue
		}
		for i := range msgs {
			if !strings.HasPrefix(msgs[i], tt.errs[i]) {
				t.Errorf("Addrs(%q) problem %d = %q, want prefix %q", tt.members, i, msgs[i], tt.errs[i])
			}
		}
	}
}

func TestSizeText(t *testing.T) {
	for _, tt := range []struct {
		bytes int64
		text  string
	}{
		{0, "0B"},
		{1, "1B"},
		{512, "512B"},
		{1023, "1023B"},
		{1 << 10, "1KiB"},
		{1536, "1536B"},
		{3 << 9, "1536B"},
		{64 << 10, "64KiB"},
		{1536 << 10, "1536KiB"},
		{1 << 20, "1MiB"},
		{16 << 20, "16MiB"},
		{1<<20 + 1, "1048577B"},
		{1 << 30, "1GiB"},
		{16 << 30, "16GiB"},
		{1 << 40, "1024GiB"},
		{1<<63 - 1, "9223372036854775807B"},
		{1<<63 - 1<<30, "8589934591GiB"},
	} {
		text, err := Size{tt.bytes}.MarshalText()
		if err != nil || string(text) != tt.text {
			t.Errorf("Size{%d}.MarshalText() = %q, %v; want %q", tt.bytes, text, err, tt.text)
		}
		var got Size
		if err := got.UnmarshalText([]byte(tt.text)); err != nil || got.Bytes != tt.bytes {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", tt.text, got.Bytes, err, tt.bytes)
		}
	}

	if text, err := (Size{-1}).MarshalText(); err == nil {
		t.Errorf("Size{-1}.MarshalText() = %q, want an error", text)
	}

	for _, tt := range []struct {
		text  string
		bytes int64
	}{
		{"1024", 1024},
		{"0", 0},
		{"0GiB", 0},
		{"016MiB", 16 << 20},
		{"2048KiB", 2 << 20},
		{"9223372036854775807", 1<<63 - 1},
		{"8589934591GiB", 1<<63 - 1<<30},
	} {
		var got Size
		if err := got.UnmarshalText([]byte(tt.text)); err != nil || got.Bytes != tt.bytes {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", tt.text, got.Bytes, err, tt.bytes)
		}
	}

	for _, tt := range []struct {
		text string
		want string
	}{
		{"", `"" is not a size; want a whole number of bytes`},
		{"MiB", `"MiB" is not a size`},
		{"-", `"-" is not a size`},
		{"+1MiB", `"+1MiB" is not a size`},
		{"1_024", `"1_024": unknown unit "_024"`},
		{"1e3", `"1e3": unknown unit "e3"`},
		{"0x400", `"0x400": unknown unit "x400"`},
		{".5MiB", `".5MiB" is not a size`},
		{"1.MiB", `"1.MiB" is not a size`},
		{"1.2.3MiB", `"1.2.3MiB" is not a size`},
		{"1KB", `"1KB": KB could mean powers of 1000 or of 1024; use KiB, MiB or GiB`},
		{"1kB", `use KiB, MiB or GiB`},
		{"1k", `use KiB, MiB or GiB`},
		{"1M", `use KiB, MiB or GiB`},
		{"1G", `use KiB, MiB or GiB`},
		{"1gb", `use KiB, MiB or GiB`},
		{"1b", `"1b": write the unit as "B"`},
		{"1KIB", `"1KIB": write the unit as "KiB"`},
		{"1TiB", `"1TiB": unknown unit "TiB"; use B, KiB, MiB or GiB`},
		{"1 KiB", `"1 KiB": write the unit without a space`},
		{" 1KiB", `" 1KiB" is not a size`},
		{"1KiB ", `"1KiB ": unknown unit "KiB "`},
		{"１MiB", `is not a size`}, // a fullwidth digit
		{"-1", `"-1" is negative`},
		{"-0", `"-0" is negative`},
		{"-1.5MiB", `"-1.5MiB" is negative`},
		{"1.5MiB", `"1.5MiB": fractions are not allowed; write "1536KiB"`},
		{"0.5KiB", `"0.5KiB": fractions are not allowed; write "512B"`},
		{"16.0MiB", `"16.0MiB": fractions are not allowed; write "16MiB"`},
		{"0.1B", `"0.1B": fractions are not allowed; want a whole number of bytes`},
		{"1." + strings.Repeat("5", 100) + "B", `fractions are not allowed; want a whole number of bytes`},
		{"9223372036854775808", `"9223372036854775808" is too large`},
		{"8589934592GiB", `"8589934592GiB" is too large`},
		{"99999999999999999999999GiB", `is too large`},
	} {
		s := Size{42}
		err := s.UnmarshalText([]byte(tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("UnmarshalText(%q) = %v, %v; want an error containing %q", tt.text, s, err, tt.want)
		}
		if s.Bytes != 42 {
			t.Errorf("failed UnmarshalText(%q) changed the value to %v", tt.text, s)
		}
	}
}

func TestDurationText(t *testing.T) {
	for _, d := range []time.Duration{
		0, 1, time.Microsecond, 500 * time.Millisecond, 3 * time.Second,
		90 * time.Second, 36*time.Hour + 1, -time.Second,
		1<<63 - 1, -1 << 63,
	} {
		text, err := Duration{d}.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText(%d): %v", d, err)
		}
		var got Duration
		if err := got.UnmarshalText(text); err != nil {
			t.Errorf("UnmarshalText(%q): %v", text, err)
		} else if got.Duration != d {
			t.Errorf("UnmarshalText(MarshalText(%d)) = %d (via %q)", d, got.Duration, text)
		}
	}

	for _, tt := range []struct {
		text string
		want time.Duration
	}{
		{"500ms", 500 * time.Millisecond},
		{"3s", 3 * time.Second},
		{"1m30s", 90 * time.Second},
		{"1.5s", 1500 * time.Millisecond},
	} {
		var got Duration
		if err := got.UnmarshalText([]byte(tt.text)); err != nil || got.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.text, got, err, tt.want)
		}
	}

	for _, text := range []string{"", "fast", "500", "1x", "s"} {
		d := Duration{time.Second}
		err := d.UnmarshalText([]byte(text))
		if err == nil {
			t.Errorf("UnmarshalText(%q) = %v, want error", text, d)
			continue
		}
		if d.Duration != time.Second {
			t.Errorf("failed UnmarshalText(%q) changed the value to %v", text, d)
		}
		if want := `is not a duration (examples: "500ms", "2s")`; !strings.Contains(err.Error(), want) {
			t.Errorf("UnmarshalText(%q) error %q does not contain %q", text, err, want)
		}
	}
}

// TestEncodeRoundTrip checks that a Config written with the TOML encoder
// (durations as strings) parses back to itself.
func TestEncodeRoundTrip(t *testing.T) {
	c := Default()
	c.Server.Name = "node-2"
	c.Cluster.Membership.Frequency = Duration{1500 * time.Millisecond}
	c.Cluster.Membership.DropTime = Duration{time.Minute}
	c.Cluster.Membership.Type = "static"
	c.Cluster.Membership.Static.Members = []string{"198.51.100.10:4000", "[2001:db8::10]:4000"}
	c.Cluster.Receiver.MaxFrame = Size{1536 << 10}
	c.Cluster.Sender.QueueLimit = Size{1<<30 + 1}
	c.Cluster.Manager.AlwaysSave = true
	c.Cluster.Manager.NotifyListenersOnReplication = false
	c.Cluster.Manager.TouchInterval = Duration{1500 * time.Millisecond}
	c.Session.CookieHTTPOnly = false
	c.Session.StaticFilter = `^/static/|\.(css|js)$|"quoted"`
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		t.Fatal(err)
	}
	got, err := Parse(buf.Bytes(), "encoded.toml")
	if err != nil {
		t.Fatalf("Parse of encoded config: %v\n%s", err, buf.Bytes())
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip =\n%+v\nwant\n%+v", got, c)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"port", "port", 0},
		{"prot", "port", 1},
		{"frequncy", "frequency", 1},
		{"tll", "ttl", 1},
		{"hots", "host", 1},
		{"bnid", "bind", 1},
		{"x", "ttl", 3},
		{strings.Repeat("a", 1000), "ttl", 1003}, // lengths too far apart: not computed
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestKeyLines(t *testing.T) {
	doc := "# a = 1 in a comment\r\n" + // 1
		"top = \"\"\"\n" + // 2
		"[not.a.table]\n" + // 3
		"x = 1\"\"\"\n" + // 4
		"lit = '''\n" + // 5
		"y = 2\n" + // 6
		"'''''\n" + // 7: two quotes of content, then the end
		"esc = \"\"\"\\\n" + // 8: line-ending backslash
		"  \\\"\"\" still inside\"\"\"\n" + // 9
		"arr = [\n" + // 10
		"  1, # z = 3\n" + // 11
		"  { q = 1 },\n" + // 12
		"]\n" + // 13
		"when = 1979-05-27 07:32:00Z # space-separated date-time\n" + // 14
		"\n" + // 15
		"[ server ] # spaces in the header\n" + // 16
		"\"quoted key\" = 1\n" + // 17
		"'literal.key' = 2\n" + // 18
		"\"esc\\u0041ped\" . sub = 3\n" + // 19
		"inline = { a = 1,\n" + // 20
		"  b.c = { d = 2 }, # TOML 1.1: newlines and comments\n" + // 21
		"}\n" + // 22
		"[[peers]]\n" + // 23
		"host = \"a\"\n" + // 24
		"[[peers]]\n" + // 25
		"host = \"b\"\n" + // 26
		"after = 'end'\n" // 27

	var m map[string]any
	if _, err := toml.Decode(doc, &m); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	want := map[string]int{
		"top":                  2,
		"lit":                  5,
		"esc":                  8,
		"arr":                  10,
		"when":                 14,
		"server":               16,
		`server."quoted key"`:  17,
		`server."literal.key"`: 18,
		"server.escAped":       19,
		"server.escAped.sub":   19,
		"server.inline":        20,
		"server.inline.a":      20,
		"server.inline.b":      21,
		"server.inline.b.c":    21,
		"server.inline.b.c.d":  21,
		"peers":                23,
		"peers.host":           24,
		"peers.after":          27,
	}
	got := keyLines(doc)
	for key, line := range want {
		if got[key] != line {
			t.Errorf("line of %s = %d, want %d", key, got[key], line)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected key %s at line %d", key, got[key])
		}
	}
}

// TestKeyLinesStops checks that the scanner gives up rather than guess when
// it cannot follow the document.
func TestKeyLinesStops(t *testing.T) {
	got := keyLines("a = 1\nb = 1 2\nc = 3\n")
	want := map[string]int{"a": 1, "b": 2}
	if !maps.Equal(got, want) {
		t.Errorf("keyLines = %v, want %v", got, want)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts is
// valid and survives a round trip through the TOML encoder.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(shipped); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("Parse returned %+v with error %v", c, err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a Config that Validate rejects: %v", err)
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatalf("encoding %+v: %v", c, err)
		}
		again, err := Parse(buf.Bytes(), "fuzz.toml")
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip: got %+v, %v; want %+v\n%s", again, err, c, buf.Bytes())
		}
	})
}

// FuzzKeyLines checks that the line scanner never panics and never invents a
// key: everything it reports for a valid document is a key the library saw,
// or a table one of those keys implies.
func FuzzKeyLines(f *testing.F) {
	if data, err := os.ReadFile(shipped); err == nil {
		f.Add(string(data))
	}
	f.Add("a.b = { c = [1, {d = 2}], 'e' = \"\"\"\nx\"\"\" }\n[f]\ng = 1979-05-27 07:32:00\n")
	f.Fuzz(func(t *testing.T, doc string) {
		lines := keyLines(doc)
		var m map[string]any
		md, err := toml.Decode(doc, &m)
		if err != nil {
			return
		}
		known := make(map[string]bool)
		for _, key := range md.Keys() {
			for i := 1; i <= len(key); i++ {
				known[key[:i].String()] = true
			}
		}
		nlines := strings.Count(doc, "\n") + 1
		for key, line := range lines {
			if !known[key] {
				t.Errorf("keyLines invented key %s (line %d); library keys: %v", key, line, md.Keys())
			}
			if line < 1 || line > nlines {
				t.Errorf("key %s at line %d of a %d-line document", key, line, nlines)
			}
		}
	})
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		sec     Security
		want    int
		wantErr string
	}{
		{"none", Security{}, 0, ""},
		{"inline", Security{Keys: []string{testKey}}, 1, ""},
		{"file with comments", Security{KeyFile: write("two", "# rotation step 1\n"+testKey+"\n\n  "+strings.Replace(testKey, "q", "r", 1)+"  \n")}, 2, ""},
		{"missing file", Security{KeyFile: filepath.Join(dir, "nope")}, 0, "cluster.security.key_file: open"},
		{"empty file", Security{KeyFile: write("empty", "# nothing\n")}, 0, "holds no key"},
		{"bad line", Security{KeyFile: write("bad", testKey+"\nAAAA\n")}, 0, "key 2 has 3 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := tt.sec.LoadKeys()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), testKey) {
					t.Fatal("the error shows a key")
				}
				return
			}
			if err != nil || len(keys) != tt.want {
				t.Fatalf("%d keys, %v", len(keys), err)
			}
		})
	}
}
