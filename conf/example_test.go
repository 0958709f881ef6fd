package conf_test

import (
	"fmt"

	"github.com/flockhq/flock/conf"
)

func ExampleParse() {
	data := []byte(`[server]
name = "node2"

[cluster.membership]
bind = "10.0.0.5"
frequncy = "1s"
ttl = 300

[cluster.security]
insecure = true
`)
	_, err := conf.Parse(data, "server.toml")
	fmt.Println(err)
	// Output:
	// server.toml:6: unknown key "cluster.membership.frequncy" (did you mean "cluster.membership.frequency"?)
	// server.toml:7: cluster.membership.ttl: 300 is out of range; allowed 0..255
}
