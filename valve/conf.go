package valve

import "github.com/flockhq/flock/conf"

// ConfigFrom reads the valve's configuration from server.toml's [session].
func ConfigFrom(c conf.Config) (Config, error) {
	s := c.Session
	filter, err := s.Filter()
	if err != nil {
		return Config{}, err
	}
	same, err := s.SameSite()
	if err != nil {
		return Config{}, err
	}
	return Config{
		CookieName: s.CookieName, CookiePath: s.CookiePath, CookieDomain: s.CookieDomain,
		CookieSecure: s.CookieSecure, CookieHTTPOnly: s.CookieHTTPOnly, CookieSameSite: same,
		StaticFilter: filter,
	}, nil
}
