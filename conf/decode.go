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
		f, field, ok := fieldByKey(dst, name)
		if !ok {
			probs = append(probs, problem{key: key.String(), err: unknownKey(dst.Type(), key)})
			continue
		}
		probs = append(probs, decodeValue(f, v, key, field.Tag.Get("example"))...)
	}
	return probs
}

// An intUnmarshaler is a TextUnmarshaler that also accepts a TOML integer,
// as [Size] accepts a number of bytes.
type intUnmarshaler interface {
	encoding.TextUnmarshaler
	unmarshalInt(n int64) error
	intMeaning() string // what the integer counts, for messages
}

// decodeValue copies the TOML value v onto dst. example, from the field's
// example tag, shows how to write a value whose default is empty.
func decodeValue(dst reflect.Value, v any, key toml.Key, example string) []problem {
	mistyped := func() []problem {
		p := keyProblem(key.String(), fmt.Errorf("found %s; want %s", describe(v), want(dst, example)))
		p.mistyped = true
		return []problem{p}
	}
	if u, ok := dst.Addr().Interface().(encoding.TextUnmarshaler); ok {
		var err error
		switch v := v.(type) {
		case string:
			err = u.UnmarshalText([]byte(v))
		case int64:
			iu, ok := u.(intUnmarshaler)
			if !ok {
				return mistyped()
			}
			err = iu.unmarshalInt(v)
		default:
			return mistyped()
		}
		if err != nil {
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
	case reflect.Bool:
		// Only a TOML boolean: a quoted "true" is as likely a mistake
		// as a quoted number.
		b, ok := v.(bool)
		if !ok {
			return mistyped()
		}
		dst.SetBool(b)
	case reflect.Slice:
		if dst.Type().Elem().Kind() == reflect.String {
			return decodeStrings(dst, v, key, example)
		}
		panic(unsupported(dst, key))
	default:
		panic(unsupported(dst, key))
	}
	return nil
}

// unsupported is reached only by giving Config a field of a new kind; the
// tests decode every field, so such a change cannot pass them.
func unsupported(dst reflect.Value, key toml.Key) string {
	return fmt.Sprintf("conf: cannot decode key %s into %s", key, dst.Type())
}

// decodeStrings copies a TOML array of strings onto the []string dst,
// reporting each element that is not a string by its index. dst keeps its
// value unless every element is a string.
func decodeStrings(dst reflect.Value, v any, key toml.Key, example string) []problem {
	arr := reflect.ValueOf(v)
	if v == nil || arr.Kind() != reflect.Slice {
		p := keyProblem(key.String(), fmt.Errorf("found %s; want %s", describe(v), want(dst, example)))
		p.mistyped = true
		return []problem{p}
	}
	out := reflect.MakeSlice(dst.Type(), arr.Len(), arr.Len())
	var probs []problem
	for i := range arr.Len() {
		e := arr.Index(i).Interface()
		s, ok := e.(string)
		if !ok {
			// Located at the key's line: the scanner does not record
			// the lines of elements.
			probs = append(probs, problem{
				key:      key.String(),
				err:      fmt.Errorf("%s[%d]: found %s; want %s", key, i, describe(e), wantString("", example)),
				mistyped: true,
			})
			continue
		}
		out.Index(i).SetString(s)
	}
	if len(probs) == 0 {
		dst.Set(out)
	}
	return probs
}

// fieldByKey returns the field of the struct v whose toml tag is name.
// The match is exact: TOML keys are case-sensitive.
func fieldByKey(v reflect.Value, name string) (reflect.Value, reflect.StructField, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if f := t.Field(i); tagName(f) == name {
			return v.Field(i), f, true
		}
	}
	return reflect.Value{}, reflect.StructField{}, false
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
// example of how to write it, or else example.
func want(dst reflect.Value, example string) string {
	if m, ok := dst.Interface().(encoding.TextMarshaler); ok {
		var s string
		if text, err := m.MarshalText(); err == nil {
			s = wantString(string(text), example)
		} else {
			s = wantString("", example)
		}
		if iu, ok := dst.Addr().Interface().(intUnmarshaler); ok {
			s += " or " + iu.intMeaning()
		}
		return s
	}
	switch dst.Kind() {
	case reflect.Struct:
		return "a table"
	case reflect.String:
		return wantString(dst.String(), example)
	case reflect.Int:
		return fmt.Sprintf("an integer such as %d", dst.Int())
	case reflect.Bool:
		return "a boolean, true or false (without quotes)"
	case reflect.Slice:
		if example != "" {
			return fmt.Sprintf("an array of strings such as [%q]", example)
		}
		return "an array of strings"
	}
	return dst.Type().String()
}

// wantString describes a string, with the first of value and example that
// is not empty as an example.
func wantString(value, example string) string {
	if value == "" {
		value = example
	}
	if value == "" {
		return "a string"
	}
	return fmt.Sprintf("a string such as %q", value)
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
