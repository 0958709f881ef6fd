package flock

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/flockhq/flock/conf"
)

// TestReadmeConfigTable keeps the README's configuration reference true: it
// lists every key conf knows, with conf's default.
func TestReadmeConfigTable(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\| `([^`]*)` \\| `([A-Z_]+)` \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		// A | inside a table cell is written \| even in a code span.
		documented[m[1]] = strings.ReplaceAll(m[2], `\|`, "|")
		if want := conf.EnvName(m[1]); m[3] != want {
			t.Errorf("README.md names %s's variable %s, conf reads %s", m[1], m[3], want)
		}
	}

	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(conf.Default()); err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if _, err := toml.Decode(buf.String(), &tree); err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	flatten("", tree, defaults)

	var keys []string
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		got, ok := documented[k]
		switch {
		case !ok:
			t.Errorf("README.md does not document %s (default %s)", k, defaults[k])
		case !sameValue(got, defaults[k]):
			t.Errorf("README.md gives %s = %s, conf's default is %s", k, got, defaults[k])
		}
	}
	for k := range documented {
		if _, ok := defaults[k]; !ok {
			t.Errorf("README.md documents %s, which conf does not know", k)
		}
	}
}

// sameValue compares two TOML values as written; durations compare by
// length ("60s" is "1m0s").
func sameValue(a, b string) bool {
	if a == b {
		return true
	}
	da, errA := time.ParseDuration(strings.Trim(a, `"`))
	db, errB := time.ParseDuration(strings.Trim(b, `"`))
	return errA == nil && errB == nil && da == db
}

func flatten(prefix string, v map[string]any, out map[string]string) {
	for k, x := range v {
		key := strings.TrimPrefix(prefix+"."+k, ".")
		switch x := x.(type) {
		case map[string]any:
			flatten(key, x, out)
		case string:
			out[key] = fmt.Sprintf("%q", x)
		case []any:
			out[key] = fmt.Sprint(x)
		default:
			out[key] = fmt.Sprint(x)
		}
	}
}

// TestReadmeShowsTheBalancerRecipes: the README shows the shipped balancer
// files verbatim, the ones the lab runs.
func TestReadmeShowsTheBalancerRecipes(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"examples/haproxy/haproxy.cfg", "examples/nginx/nginx.conf"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(readme, []byte("```\n"+string(b)+"```\n")) {
			t.Errorf("README.md does not show %s verbatim", f)
		}
	}
}
