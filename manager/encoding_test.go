package manager

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// The encoding rules README.md lists ("What a value keeps"): each row
// stores a value with Set and reads it back with Get[T] as another node
// would, from the bytes alone.

type profile struct {
	Name    string
	Age     int
	private string // unexported: msgpack cannot see it
	Renamed string `msgpack:"r"`
	Skipped string `msgpack:"-"`
	JSON    string `json:"json_name"` // json tags mean nothing to msgpack
}

type narrowProfile struct {
	Name string
	Age  int8
}

// roundTrip sets v under "k" in a fresh session and reads it back as a T.
func roundTrip[T any](t *testing.T, s *Session, v any) (T, bool, error) {
	t.Helper()
	if err := s.Set("k", v); err != nil {
		t.Fatalf("Set(%#v): %v", v, err)
	}
	return Get[T](s, "k")
}

func TestEncodingRules(t *testing.T) {
	m := alone(t)
	s := create(t, m, nil)
	when := time.Date(2026, 3, 1, 12, 30, 0, 123456789, time.FixedZone("UTC+5", 5*3600))
	now := time.Now() // has a monotonic reading
	for _, tc := range []struct {
		rule  string
		check func(t *testing.T) error
	}{
		{"exported fields round trip, unexported are dropped", func(t *testing.T) error {
			got, _, err := roundTrip[profile](t, s, profile{Name: "ann", Age: 30, private: "secret", Renamed: "r", Skipped: "s", JSON: "j"})
			return want(err, got, profile{Name: "ann", Age: 30, Renamed: "r", JSON: "j"})
		}},
		{"the msgpack tag renames and skips; json tags are ignored", func(t *testing.T) error {
			got, _, err := roundTrip[map[string]any](t, s, profile{Name: "ann", Renamed: "r", JSON: "j"})
			if err != nil {
				return err
			}
			_, hasR := got["r"]
			_, hasSkipped := got["Skipped"]
			_, hasJSON := got["JSON"]
			if !hasR || hasSkipped || !hasJSON {
				return errors.New("fields " + keysOf(got))
			}
			return nil
		}},
		{"time.Time: the same instant, in time.Local, no monotonic reading", func(t *testing.T) error {
			got, _, err := roundTrip[time.Time](t, s, when)
			if err != nil {
				return err
			}
			if !got.Equal(when) || got.Location() != time.Local || got == when {
				return errors.New("got " + got.String())
			}
			got, _, err = roundTrip[time.Time](t, s, now)
			if err != nil {
				return err
			}
			return want(nil, got, now.Round(0).In(time.Local))
		}},
		{"the zero time stays zero", func(t *testing.T) error {
			got, _, err := roundTrip[time.Time](t, s, time.Time{})
			if err != nil || !got.IsZero() {
				return errors.Join(err, errors.New("got "+got.String()))
			}
			return nil
		}},
		{"time.Duration round trips", func(t *testing.T) error {
			got, _, err := roundTrip[time.Duration](t, s, 90*time.Second)
			return want(err, got, 90*time.Second)
		}},
		{"integers read as any integer type they fit", func(t *testing.T) error {
			a, _, err1 := roundTrip[int8](t, s, int64(-100))
			b, _, err2 := roundTrip[uint64](t, s, int8(100))
			c, _, err3 := roundTrip[int](t, s, uint32(1<<31))
			return want(errors.Join(err1, err2, err3), []any{a, b, c}, []any{int8(-100), uint64(100), 1 << 31})
		}},
		{"an integer that does not fit: ok, the zero value and an error", func(t *testing.T) error {
			got, ok, err := roundTrip[int8](t, s, 300)
			if !ok || got != 0 || !errors.Is(err, errOutOfRange) {
				return errors.New("no out-of-range error")
			}
			got2, _, err := roundTrip[uint](t, s, -1)
			if got2 != 0 || !errors.Is(err, errOutOfRange) {
				return errors.New("no out-of-range error for -1 into uint")
			}
			return nil
		}},
		{"inside a struct msgpack narrows silently: use wide integer fields", func(t *testing.T) error {
			got, _, err := roundTrip[narrowProfile](t, s, profile{Name: "ann", Age: 300})
			return want(err, got, narrowProfile{Name: "ann", Age: 44})
		}},
		{"an integer reads as a float, a float never as an integer", func(t *testing.T) error {
			f, _, err := roundTrip[float64](t, s, 3)
			if err != nil || f != 3 {
				return errors.New("int as float64")
			}
			i, ok, err := roundTrip[int](t, s, 1.5)
			if !ok || i != 0 || err == nil {
				return errors.New("1.5 read as an int without an error")
			}
			return nil
		}},
		{"string and []byte read as each other", func(t *testing.T) error {
			b, _, err1 := roundTrip[[]byte](t, s, "ab")
			str, _, err2 := roundTrip[string](t, s, []byte("cd"))
			return want(errors.Join(err1, err2), []any{string(b), str}, []any{"ab", "cd"})
		}},
		{"a wrong type: ok, the zero value and an error", func(t *testing.T) error {
			got, ok, err := roundTrip[profile](t, s, "not a profile")
			if !ok || err == nil || !reflect.DeepEqual(got, profile{}) {
				return errors.New("wrong type read without an error")
			}
			b, ok, err := roundTrip[bool](t, s, 1)
			if !ok || err == nil || b {
				return errors.New("1 read as a bool")
			}
			return nil
		}},
		{"nil slices and maps stay nil, empty ones stay empty", func(t *testing.T) error {
			a, _, err1 := roundTrip[[]int](t, s, []int(nil))
			b, _, err2 := roundTrip[[]int](t, s, []int{})
			c, _, err3 := roundTrip[map[string]int](t, s, map[string]int(nil))
			if err := errors.Join(err1, err2, err3); err != nil {
				return err
			}
			if a != nil || b == nil || c != nil {
				return errors.New("nil-ness not kept")
			}
			return nil
		}},
		{"into any: the smallest integer type, structs as maps", func(t *testing.T) error {
			n, _, err1 := roundTrip[any](t, s, 5)
			big, _, err2 := roundTrip[any](t, s, 300)
			st, _, err3 := roundTrip[any](t, s, narrowProfile{Name: "a", Age: 1})
			return want(errors.Join(err1, err2, err3), []any{n, big, st}, []any{int8(5), uint16(300), map[string]any{"Name": "a", "Age": int8(1)}})
		}},
		{"pointers: a *T reads as a T, nil as the zero value", func(t *testing.T) error {
			v, _, err1 := roundTrip[narrowProfile](t, s, &narrowProfile{Name: "p"})
			p, _, err2 := roundTrip[*narrowProfile](t, s, (*narrowProfile)(nil))
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if v.Name != "p" || p != nil {
				return errors.New("pointer rule broken")
			}
			return nil
		}},
		{"maps with integer keys round trip", func(t *testing.T) error {
			got, _, err := roundTrip[map[int]string](t, s, map[int]string{1: "a", 2: "b"})
			return want(err, got, map[int]string{1: "a", 2: "b"})
		}},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			if err := tc.check(t); err != nil {
				t.Error(err)
			}
		})
	}
}

func want(err error, got, want any) error {
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("got %#v, want %#v", got, want)
	}
	return nil
}

func keysOf(m map[string]any) string {
	out := ""
	for k := range m {
		out += k + " "
	}
	return out
}
