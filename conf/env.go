package conf

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// EnvPrefix starts the environment variable of every key.
const EnvPrefix = "FLOCK_"

// EnvName is the environment variable that sets the dotted key:
// "cluster.manager.max_active" is FLOCK_CLUSTER_MANAGER_MAX_ACTIVE.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Keys lists every dotted key of the configuration, in the order of the
// Config struct.
func Keys() []string {
	var keys []string
	walkLeaves(reflect.ValueOf(&Config{}).Elem(), nil, func(_ reflect.Value, _ reflect.StructField, key toml.Key) {
		keys = append(keys, key.String())
	})
	return keys
}

func walkLeaves(v reflect.Value, path toml.Key, f func(reflect.Value, reflect.StructField, toml.Key)) {
	t := v.Type()
	for i := range t.NumField() {
		field := t.Field(i)
		name := tagName(field)
		if name == "" || name == "-" {
			continue
		}
		key := append(path[:len(path):len(path)], name)
		fv := v.Field(i)
		_, text := fv.Addr().Interface().(encoding.TextUnmarshaler)
		if fv.Kind() == reflect.Struct && !text {
			walkLeaves(fv, key, f)
			continue
		}
		f(fv, field, key)
	}
}

// ApplyEnv overlays on c the keys set in environ (as os.Environ gives it):
// every key has a variable, EnvName(key). A value is written as in the
// file without TOML's quotes: FLOCK_CLUSTER_DOMAIN=shop,
// FLOCK_SERVER_DRAIN_TIMEOUT=30s, FLOCK_CLUSTER_MANAGER_MAX_ACTIVE=5000,
// FLOCK_CLUSTER_SECURITY_INSECURE=true, and a list either comma-separated
// or as a TOML array. Variables that start with EnvPrefix and name no key
// are returned in unknown (a typo the caller should report); the error
// names each variable whose value does not fit its key. c is not
// validated: call Validate after the flags are applied too.
func (c *Config) ApplyEnv(environ []string) (unknown []string, err error) {
	set := map[string]string{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, EnvPrefix) {
			set[name] = value
		}
	}
	var errs []error
	walkLeaves(reflect.ValueOf(c).Elem(), nil, func(dst reflect.Value, field reflect.StructField, key toml.Key) {
		name := EnvName(key.String())
		raw, ok := set[name]
		if !ok {
			return
		}
		delete(set, name)
		v, perr := envValue(dst, raw)
		if perr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, perr))
			return
		}
		for _, p := range decodeValue(dst, v, key, field.Tag.Get("example")) {
			errs = append(errs, fmt.Errorf("%s: %w", name, p.err))
		}
	})
	for name := range set {
		unknown = append(unknown, name)
	}
	slices.Sort(unknown)
	return unknown, errors.Join(errs...)
}

// envValue is raw as the TOML value decodeValue expects for dst.
func envValue(dst reflect.Value, raw string) (any, error) {
	if _, ok := dst.Addr().Interface().(encoding.TextUnmarshaler); ok {
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			if _, ints := dst.Addr().Interface().(intUnmarshaler); ints {
				return n, nil
			}
		}
		return raw, nil
	}
	switch dst.Kind() {
	case reflect.Int:
		if n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64); err == nil {
			return n, nil
		}
	case reflect.Bool:
		switch strings.TrimSpace(raw) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	case reflect.Slice:
		if strings.HasPrefix(strings.TrimSpace(raw), "[") {
			var doc struct{ V []any }
			if _, err := toml.Decode("V = "+raw, &doc); err != nil {
				return nil, fmt.Errorf("%q is not a TOML array: %w", raw, err)
			}
			return doc.V, nil
		}
		out := []any{}
		for _, part := range strings.Split(raw, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out, nil
	}
	return raw, nil // decodeValue says what it wanted instead
}
