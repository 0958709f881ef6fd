package conf

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    func(*Config)
		unknown []string
		err     string
	}{
		{"nothing", nil, func(*Config) {}, nil, ""},
		{"string, duration, size, int, bool", []string{
			"FLOCK_CLUSTER_DOMAIN=shop", "FLOCK_SERVER_DRAIN_TIMEOUT=30s", "FLOCK_CLUSTER_RECEIVER_MAX_FRAME=8MiB",
			"FLOCK_CLUSTER_MANAGER_MAX_ACTIVE=5000", "FLOCK_CLUSTER_SECURITY_INSECURE=true", "PATH=/bin",
		}, func(c *Config) {
			c.Cluster.Domain = "shop"
			c.Server.DrainTimeout = Duration{30 * time.Second}
			c.Cluster.Receiver.MaxFrame = Size{8 << 20}
			c.Cluster.Manager.MaxActive = 5000
			c.Cluster.Security.Insecure = true
		}, nil, ""},
		{"size in bytes", []string{"FLOCK_CLUSTER_RECEIVER_MAX_FRAME=1048576"}, func(c *Config) { c.Cluster.Receiver.MaxFrame = Size{1 << 20} }, nil, ""},
		{"list, comma-separated", []string{"FLOCK_CLUSTER_MEMBERSHIP_STATIC_MEMBERS=198.51.100.1:4000, 198.51.100.2:4000"},
			func(c *Config) {
				c.Cluster.Membership.Static.Members = []string{"198.51.100.1:4000", "198.51.100.2:4000"}
			}, nil, ""},
		{"list, TOML", []string{`FLOCK_CLUSTER_MEMBERSHIP_STATIC_MEMBERS=["198.51.100.1:4000"]`},
			func(c *Config) { c.Cluster.Membership.Static.Members = []string{"198.51.100.1:4000"} }, nil, ""},
		{"empty list", []string{"FLOCK_CLUSTER_SECURITY_KEYS="}, func(*Config) {}, nil, ""},
		{"a typo", []string{"FLOCK_CLUSTER_DOMIAN=shop", "FLOCK_LAB_LOGS=/tmp"}, func(*Config) {}, []string{"FLOCK_CLUSTER_DOMIAN", "FLOCK_LAB_LOGS"}, ""},
		{"not an integer", []string{"FLOCK_CLUSTER_MANAGER_MAX_ACTIVE=lots"}, func(*Config) {}, nil,
			`FLOCK_CLUSTER_MANAGER_MAX_ACTIVE: cluster.manager.max_active: found string "lots"; want an integer`},
		{"not a boolean", []string{"FLOCK_CLUSTER_SECURITY_INSECURE=yes"}, func(*Config) {}, nil, "FLOCK_CLUSTER_SECURITY_INSECURE: cluster.security.insecure: found string"},
		{"not a duration", []string{"FLOCK_SERVER_DRAIN_TIMEOUT=10"}, func(*Config) {}, nil, "FLOCK_SERVER_DRAIN_TIMEOUT: server.drain_timeout:"},
		{"a bad array", []string{"FLOCK_CLUSTER_SECURITY_KEYS=[1,"}, func(*Config) {}, nil, "FLOCK_CLUSTER_SECURITY_KEYS: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Default()
			unknown, err := got.ApplyEnv(tc.env)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if !reflect.DeepEqual(unknown, tc.unknown) {
				t.Errorf("unknown = %v, want %v", unknown, tc.unknown)
			}
			if tc.err != "" {
				return
			}
			want := Default()
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestEveryKeyHasAVariable(t *testing.T) {
	keys := Keys()
	if len(keys) != 67 {
		t.Errorf("%d keys, want 67: %v", len(keys), keys)
	}
	seen := map[string]string{}
	for _, k := range keys {
		name := EnvName(k)
		if other, dup := seen[name]; dup {
			t.Errorf("%s and %s share %s", k, other, name)
		}
		seen[name] = k
	}
	if EnvName("cluster.manager.max_active") != "FLOCK_CLUSTER_MANAGER_MAX_ACTIVE" {
		t.Error(EnvName("cluster.manager.max_active"))
	}
}
