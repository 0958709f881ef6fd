package conf

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// A problem is one thing wrong with a configuration, kept with the key it is
// about so that Parse can find the key's line in the file.
type problem struct {
	key      string // dotted, as toml.Key.String writes it
	err      error  // names the key itself
	mistyped bool   // the value has the wrong TOML type and was not decoded

	// related is the other key of a check that compares two, such as
	// frequency for drop_time. The problem may be caused by either.
	related string
}

func keyProblem(key string, err error) problem {
	return problem{key: key, err: fmt.Errorf("%s: %w", key, err)}
}

// decodeTable copies table onto the struct dst, whose fields name their keys
// in toml tags, and reports every key it cannot copy.
//
// It replaces the library's decoder, which stops at the first error, matches
// keys case-insensitively (so a stray "Port" would set port) and words its
// errors in terms of Go types rather than what the user should write.
func decodeTable(dst reflect.Value, table map[string]any, path toml.Key) []problem {
	var probs []problem
	for name, v := range table {
		key := append(path[:len(path):len(path)], name)
		f, ok := fieldByKey(dst, name)
		if !ok {
			probs = append(probs, problem{key: key.String(), err: unknownKey(dst.Type(), key)})
			continue
		}
		probs = append(probs, decodeValue(f, v, key)...)
	}
	return probs
}

func decodeValue(dst reflect.Value, v any, key toml.Key) []problem {
	mistyped := func() []problem {
		p := keyProblem(key.String(), fmt.Errorf("found %s; want %s", describe(v), want(dst)))
		p.mistyped = true
		return []problem{p}
	}
	if u, ok := dst.Addr().Interface().(encoding.TextUnmarshaler); ok {
		s, ok := v.(string)
		if !ok {
			return mistyped()
		}
		if err := u.UnmarshalText([]byte(s)); err != nil {
			return []problem{keyProblem(key.String(), err)}
		}
		return nil
	}
	switch dst.Kind() {
	case reflect.Struct:
		t, ok := v.(map[string]any)
		if !ok {
			return mistyped()
		}
		return decodeTable(dst, t, key)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return mistyped()
		}
		dst.SetString(s)
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			return mistyped()
		}
		if dst.OverflowInt(n) { // only where int is 32 bits
			return []problem{keyProblem(key.String(), fmt.Errorf("%d is out of range", n))}
		}
		dst.SetInt(n)
	default:
		// Reached only by giving Config a field of a new kind; the tests
		// decode every field, so such a change cannot pass them.
		panic(fmt.Sprintf("conf: cannot decode key %s into %s", key, dst.Type()))
	}
	return nil
}

// fieldByKey returns the field of the struct v whose toml tag is name.
// The match is exact: TOML keys are case-sensitive.
func fieldByKey(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if tagName(t.Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// describe names the TOML type of a decoded value, with the value when it is
// short enough to quote.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return "string " + strconv.Quote(v)
	case int64:
		return "integer " + strconv.FormatInt(v, 10)
	case float64:
		return "float " + strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case time.Time:
		return "date-time"
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// want describes what dst accepts, with its current (default) value as an
// example of how to write it.
func want(dst reflect.Value) string {
	if m, ok := dst.Interface().(encoding.TextMarshaler); ok {
		if text, err := m.MarshalText(); err == nil && len(text) > 0 {
			return fmt.Sprintf("a string such as %q", text)
		}
		return "a string"
	}
	switch dst.Kind() {
	case reflect.Struct:
		return "a table"
	case reflect.String:
		if dst.String() != "" {
			return fmt.Sprintf("a string such as %q", dst.String())
		}
		return "a string"
	case reflect.Int:
		return fmt.Sprintf("an integer such as %d", dst.Int())
	}
	return dst.Type().String()
}

// unknownKey reports a key that no field of struct t accepts, suggesting the
// field the user most likely meant.
func unknownKey(t reflect.Type, key toml.Key) error {
	name := key[len(key)-1]
	best, bestDist := "", 3 // suggest only within two edits
	for i := range t.NumField() {
		field := tagName(t.Field(i))
		if d := editDistance(strings.ToLower(name), field); d < bestDist && d < len(field) {
			best, bestDist = field, d
		}
	}
	if best == "" {
		return fmt.Errorf("unknown key %q", key.String())
	}
	suggestion := append(key[:len(key)-1:len(key)-1], best)
	return fmt.Errorf("unknown key %q (did you mean %q?)", key.String(), suggestion.String())
}

// editDistance counts the insertions, deletions, substitutions and swaps of
// adjacent bytes that turn a into b (optimal string alignment distance).
// It gives up with a large number when the lengths alone differ by more than
// two, which also keeps a hostile megabyte-long key cheap.
func editDistance(a, b string) int {
	if len(a) > len(b)+2 || len(b) > len(a)+2 {
		return len(a) + len(b)
	}
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
