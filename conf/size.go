package conf

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// sizeUnits are the units a Size may be written in, largest first.
var sizeUnits = []struct {
	name  string
	bytes int64
}{
	{"GiB", gib},
	{"MiB", mib},
	{"KiB", kib},
	{"B", 1},
}

// sizeSyntax says how to write a Size; it ends every parse error.
const sizeSyntax = `want a whole number of bytes with an optional unit B, KiB, MiB or GiB, such as "16MiB", "512B" or "1024"`

// Size is a number of bytes, written in TOML as a string with a binary unit,
// such as "16MiB", "64KiB", "1GiB" or "512B", as a string of digits ("1024")
// or as an integer (1024). KB, MB and GB are refused: whether they mean
// powers of 1000 or 1024 depends on who wrote them.
type Size struct{ Bytes int64 }

// String writes s in the largest binary unit that divides it exactly, such
// as "16MiB" or "1536KiB".
func (s Size) String() string {
	for _, u := range sizeUnits {
		if s.Bytes%u.bytes == 0 && (s.Bytes != 0 || u.bytes == 1) {
			return strconv.FormatInt(s.Bytes/u.bytes, 10) + u.name
		}
	}
	panic("unreachable: every size is a whole number of bytes")
}

// MarshalText implements [encoding.TextMarshaler]. It fails on a negative
// size, which UnmarshalText would refuse.
func (s Size) MarshalText() ([]byte, error) {
	if s.Bytes < 0 {
		return nil, fmt.Errorf("conf: size %d is negative", s.Bytes)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler].
func (s *Size) UnmarshalText(text []byte) error {
	n, err := parseSize(string(text))
	if err != nil {
		return err
	}
	s.Bytes = n
	return nil
}

// unmarshalInt accepts a TOML integer as a number of bytes (see
// intUnmarshaler).
func (s *Size) unmarshalInt(n int64) error {
	if n < 0 {
		return fmt.Errorf("%d is negative; %s", n, sizeSyntax)
	}
	s.Bytes = n
	return nil
}

func (*Size) intMeaning() string { return "an integer number of bytes" }

func parseSize(s string) (int64, error) {
	notSize := fmt.Errorf("%q is not a size; %s", s, sizeSyntax)
	num, neg := strings.CutPrefix(s, "-")
	i := 0
	for i < len(num) && (isDigit(num[i]) || num[i] == '.') {
		i++
	}
	num, unit := num[:i], num[i:]

	mult := int64(0)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		switch {
		case unit == u.name:
			mult = u.bytes
		case strings.EqualFold(unit, u.name):
			return 0, fmt.Errorf("%q: write the unit as %q; units are case-sensitive", s, u.name)
		}
	}
	switch {
	case mult != 0:
	case num == "":
		return 0, notSize
	case isDecimalUnit(unit):
		return 0, fmt.Errorf("%q: %s could mean powers of 1000 or of 1024; use KiB, MiB or GiB (powers of 1024)", s, unit)
	case strings.TrimLeft(unit, " \t") != unit:
		return 0, fmt.Errorf("%q: write the unit without a space; %s", s, sizeSyntax)
	default:
		return 0, fmt.Errorf("%q: unknown unit %q; use B, KiB, MiB or GiB", s, unit)
	}

	whole, frac, isFrac := strings.Cut(num, ".")
	if whole == "" || !allDigits(whole) || isFrac && (frac == "" || !allDigits(frac)) {
		return 0, notSize
	}
	if neg {
		return 0, fmt.Errorf("%q is negative; %s", s, sizeSyntax)
	}
	if isFrac {
		return 0, fractionError(s, num, mult)
	}
	n, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || n > math.MaxInt64/mult { // only ErrRange: whole is digits
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// fractionError refuses "1.5MiB", suggesting how to write it when it is a
// whole number of bytes.
func fractionError(s, num string, mult int64) error {
	if len(num) <= 40 { // keep big.Rat's work small on hostile input
		r, ok := new(big.Rat).SetString(num)
		if ok {
			r.Mul(r, new(big.Rat).SetInt64(mult))
			if r.IsInt() && r.Num().IsInt64() {
				return fmt.Errorf("%q: fractions are not allowed; write %q", s, Size{r.Num().Int64()})
			}
		}
	}
	return fmt.Errorf("%q: fractions are not allowed; %s", s, sizeSyntax)
}

// isDecimalUnit reports whether unit is one of the units that people write
// for both powers of 1000 and 1024: K, KB, M, MB, G, GB in any case.
func isDecimalUnit(unit string) bool {
	u := strings.ToUpper(unit)
	return u == "K" || u == "KB" || u == "M" || u == "MB" || u == "G" || u == "GB"
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
