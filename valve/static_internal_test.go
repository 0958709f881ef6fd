package valve

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// The default static filter's hand-written test matches the paths its
// regexp matches, and no others.
func TestDefaultStaticFilter(t *testing.T) {
	re := DefaultConfig().StaticFilter
	for _, path := range []string{
		"/", "/counter", "/app.css", "/app.CSS", "/a.js", "/a.json", "/img/x.png", "/x.jpg", "/x.jpeg", "/x.jpgg",
		"/x.gif", "/favicon.ico", "/i.svg", "/f.woff", "/f.woff2", "/f.woff3", "/m.js.map", "/map", "/.css", "/a.css/",
		"/a.css?x=1", "/dir.js/page", "css", ".js", "/x.", "/x..css", "/ümlaut.png", "/a.html",
	} {
		if got, want := isDefaultStatic(path), re.MatchString(path); got != want {
			t.Errorf("%q: %v, the regexp says %v", path, got, want)
		}
	}
}

// cookieValues reads a cookie's values as net/http's parser does, for the
// values a session id or a version can take.
func TestCookieValues(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  []string
	}{
		{"none", nil, nil},
		{"one", []string{"S=abc"}, []string{"abc"}},
		{"among others", []string{"a=1; S=abc; b=2"}, []string{"abc"}},
		{"spaces", []string{"  S=abc  ;b=2"}, []string{"abc"}},
		{"quoted", []string{`S="abc"`}, []string{"abc"}},
		{"twice, two lines", []string{"S=abc", "x=1; S=def"}, []string{"abc", "def"}},
		{"a longer name", []string{"SS=abc; S_v=1"}, nil},
		{"empty value", []string{"S="}, []string{""}},
		{"no value", []string{"S"}, []string{""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Cookie": tc.lines}
			got := cookieValues(h, "S")
			if !slices.Equal(got, tc.want) {
				t.Errorf("%q: %q, want %q", tc.lines, got, tc.want)
			}
			// Where net/http keeps the cookie, the values agree.
			r := &http.Request{Header: h}
			var std []string
			for _, c := range r.CookiesNamed("S") {
				std = append(std, c.Value)
			}
			if !slices.Equal(got, std) && len(std) > 0 {
				t.Errorf("%q: %q, net/http reads %q", tc.lines, got, std)
			}
		})
	}
	many := http.Header{"Cookie": {strings.Repeat("S=a; ", 1000)}}
	if n := len(cookieValues(many, "S")); n != maxCookieValues {
		t.Errorf("1000 values: %d read, want at most %d", n, maxCookieValues)
	}
}
