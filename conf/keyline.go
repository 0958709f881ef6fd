package conf

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// keyLines maps each key defined in the TOML document doc, written as
// toml.Key.String writes it, to the 1-based line where it is first defined.
// Tables count as keys: "[a.b]" defines "a" and "a.b", and so does "a.b = 1".
//
// The TOML library records these positions but does not export them, so this
// scanner reads the document again. It is only given documents the library
// has accepted, so it need not report errors: when it meets something it does
// not understand it stops, and the keys after that point get no line. A
// message without a line is better than one that points at the wrong line.
func keyLines(doc string) map[string]int {
	s := &lineScanner{doc: doc, line: 1, lines: make(map[string]int)}
	s.document()
	return s.lines
}

type lineScanner struct {
	doc   string
	pos   int // byte offset into doc
	line  int // line of doc[pos]
	lines map[string]int
}

func (s *lineScanner) document() {
	var table toml.Key // the current [table]
	for {
		s.skipSpace()
		if s.pos >= len(s.doc) {
			return
		}
		line := s.line
		if s.peek() == '[' {
			open, close := "[", "]"
			if strings.HasPrefix(s.doc[s.pos:], "[[") {
				open, close = "[[", "]]"
			}
			s.pos += len(open)
			key, ok := s.key()
			if !ok || !s.consume(close) {
				return
			}
			table = key
			s.define(key, line)
		} else {
			key, ok := s.key()
			if !ok || !s.consume("=") {
				return
			}
			full := append(table[:len(table):len(table)], key...)
			s.define(full, line)
			if !s.value(full) {
				return
			}
		}
		// Only a comment may follow on the same line; anything else means
		// this scanner has misread the line.
		s.skipBlank()
		if s.pos < len(s.doc) && s.peek() != '\n' && s.peek() != '#' {
			return
		}
	}
}

// define records key and the tables it implies at line, unless they were
// defined earlier.
func (s *lineScanner) define(key toml.Key, line int) {
	for i := 1; i <= len(key); i++ {
		k := key[:i].String()
		if _, ok := s.lines[k]; !ok {
			s.lines[k] = line
		}
	}
}

// key reads a possibly dotted key: bare, "basic" or 'literal' parts separated
// by dots, with blanks allowed around the dots.
func (s *lineScanner) key() (toml.Key, bool) {
	var key toml.Key
	for {
		s.skipBlank()
		part, ok := s.keyPart()
		if !ok {
			return nil, false
		}
		key = append(key, part)
		s.skipBlank()
		if !s.consume(".") {
			return key, true
		}
	}
}

func (s *lineScanner) keyPart() (string, bool) {
	switch s.peek() {
	case '"':
		raw, ok := s.basicString()
		if !ok {
			return "", false
		}
		return unescape(raw)
	case '\'':
		return s.literalString()
	}
	start := s.pos
	for s.pos < len(s.doc) && isBareKeyByte(s.doc[s.pos]) {
		s.pos++
	}
	return s.doc[start:s.pos], s.pos > start
}

func isBareKeyByte(c byte) bool {
	return isAlnum(c) || c == '-' || c == '_'
}

// value skips the value that starts at s.pos. key is the key the value is
// assigned to, used to name the keys of inline tables; it is nil inside
// arrays, whose tables have no key of their own.
func (s *lineScanner) value(key toml.Key) bool {
	s.skipBlank()
	switch {
	case strings.HasPrefix(s.doc[s.pos:], `"""`):
		return s.multilineString('"')
	case strings.HasPrefix(s.doc[s.pos:], `'''`):
		return s.multilineString('\'')
	case s.peek() == '"':
		_, ok := s.basicString()
		return ok
	case s.peek() == '\'':
		_, ok := s.literalString()
		return ok
	case s.peek() == '[':
		return s.array()
	case s.peek() == '{':
		return s.inlineTable(key)
	}
	return s.scalar()
}

func (s *lineScanner) array() bool {
	s.pos++ // [
	for {
		s.skipSpace()
		if s.consume("]") {
			return true
		}
		if !s.value(nil) {
			return false
		}
		s.skipSpace()
		if !s.consume(",") && s.peek() != ']' {
			return false
		}
	}
}

// inlineTable reads { k = v, ... }. TOML 1.1, which the library accepts,
// allows newlines, comments and a trailing comma inside.
func (s *lineScanner) inlineTable(key toml.Key) bool {
	s.pos++ // {
	for {
		s.skipSpace()
		if s.consume("}") {
			return true
		}
		line := s.line
		k, ok := s.key()
		if !ok || !s.consume("=") {
			return false
		}
		var full toml.Key
		if key != nil {
			full = append(key[:len(key):len(key)], k...)
			s.define(full, line)
		}
		if !s.value(full) {
			return false
		}
		s.skipSpace()
		if !s.consume(",") && s.peek() != '}' {
			return false
		}
	}
}

// scalar skips a number, boolean or date-time.
func (s *lineScanner) scalar() bool {
	start := s.pos
	s.skipToken()
	// A date-time may separate its date and time with a space.
	if isDate(s.doc[start:s.pos]) && s.pos+1 < len(s.doc) && s.doc[s.pos] == ' ' && isDigit(s.doc[s.pos+1]) {
		s.pos++
		s.skipToken()
	}
	return s.pos > start
}

func (s *lineScanner) skipToken() {
	for s.pos < len(s.doc) && !strings.ContainsRune(" \t\r\n,]}#", rune(s.doc[s.pos])) {
		s.pos++
	}
}

// isDate reports whether t is a date such as 1979-05-27.
func isDate(t string) bool {
	if len(t) != len("2006-01-02") {
		return false
	}
	for i := 0; i < len(t); i++ {
		if i == 4 || i == 7 {
			if t[i] != '-' {
				return false
			}
		} else if !isDigit(t[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// basicString reads a one-line "string" and returns its text between the
// quotes, escapes undecoded.
func (s *lineScanner) basicString() (string, bool) {
	s.pos++ // "
	start := s.pos
	for s.pos < len(s.doc) {
		switch s.doc[s.pos] {
		case '\\':
			s.pos += 2
		case '"':
			s.pos++
			return s.doc[start : s.pos-1], true
		case '\n':
			return "", false
		default:
			s.pos++
		}
	}
	return "", false
}

// literalString reads a one-line 'string' and returns its text.
func (s *lineScanner) literalString() (string, bool) {
	s.pos++ // '
	end := strings.IndexAny(s.doc[s.pos:], "'\n")
	if end < 0 || s.doc[s.pos+end] != '\'' {
		return "", false
	}
	text := s.doc[s.pos : s.pos+end]
	s.pos += end + 1
	return text, true
}

// multilineString skips a multi-line string, basic when quote is a double
// quote and literal when it is a single quote, counting its lines.
func (s *lineScanner) multilineString(quote byte) bool {
	s.pos += 3
	for s.pos < len(s.doc) {
		switch c := s.doc[s.pos]; {
		case c == '\\' && quote == '"':
			s.pos++
			if s.pos < len(s.doc) && s.doc[s.pos] == '\n' { // line-ending backslash
				s.line++
			}
			s.pos++
		case c == quote:
			// A run of three to five quotes ends the string; the closing
			// three are the last of the run.
			n := 0
			for s.pos < len(s.doc) && s.doc[s.pos] == quote {
				s.pos++
				n++
			}
			if n >= 3 {
				return n <= 5
			}
		case c == '\n':
			s.line++
			s.pos++
		default:
			s.pos++
		}
	}
	return false
}

// skipSpace skips blanks, newlines and comments.
func (s *lineScanner) skipSpace() {
	for s.pos < len(s.doc) {
		switch s.doc[s.pos] {
		case ' ', '\t', '\r':
			s.pos++
		case '\n':
			s.line++
			s.pos++
		case '#':
			if i := strings.IndexByte(s.doc[s.pos:], '\n'); i >= 0 {
				s.pos += i
			} else {
				s.pos = len(s.doc)
			}
		default:
			return
		}
	}
}

// skipBlank skips spaces and tabs, staying on the line.
func (s *lineScanner) skipBlank() {
	for s.pos < len(s.doc) && (s.doc[s.pos] == ' ' || s.doc[s.pos] == '\t' || s.doc[s.pos] == '\r') {
		s.pos++
	}
}

func (s *lineScanner) peek() byte {
	if s.pos >= len(s.doc) {
		return 0
	}
	return s.doc[s.pos]
}

func (s *lineScanner) consume(tok string) bool {
	if strings.HasPrefix(s.doc[s.pos:], tok) {
		s.pos += len(tok)
		return true
	}
	return false
}

// unescape decodes the escapes of a TOML basic string:
// \b \t \n \f \r \e \" \\ \xHH \uHHHH \UHHHHHHHH.
func unescape(raw string) (string, bool) {
	if !strings.Contains(raw, `\`) {
		return raw, true
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(raw) {
			return "", false
		}
		hex := 0
		switch raw[i] {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case '"', '\\':
			b.WriteByte(raw[i])
		case 'x':
			hex = 2
		case 'u':
			hex = 4
		case 'U':
			hex = 8
		default:
			return "", false
		}
		if hex > 0 {
			if i+hex >= len(raw) {
				return "", false
			}
			r, err := strconv.ParseUint(raw[i+1:i+1+hex], 16, 32)
			if err != nil || !utf8.ValidRune(rune(r)) {
				return "", false
			}
			b.WriteRune(rune(r))
			i += hex
		}
	}
	return b.String(), true
}
