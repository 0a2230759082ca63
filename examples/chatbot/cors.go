package main

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/memload/memload/openai"
)

// checkOrigin checks one entry of CORS_ALLOW_ORIGINS: "*" or an origin,
// scheme://host[:port] with nothing after it.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin: want scheme://host[:port], such as https://chat.example.com, or *", o)
	}
	return nil
}

// corsAllowed reports whether a page from origin may call the API: an
// origin of CORS_ALLOW_ORIGINS, or, when serving locally, one on loopback.
func (s *server) corsAllowed(origin string) bool {
	if slices.Contains(s.cfg.CORSOrigins, "*") || slices.Contains(s.cfg.CORSOrigins, origin) {
		return true
	}
	if s.cfg.OnLambda {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cors adds the CORS headers for an allowed origin and answers preflight
// requests. It reports whether the request is answered.
func (s *server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if origin == "" {
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", "GET, POST, OPTIONS")
			w.WriteHeader(http.StatusNoContent)
			return true
		}
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if !s.corsAllowed(origin) {
		if preflight {
			openai.WriteError(w, &openai.Error{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "origin_not_allowed",
				Message: fmt.Sprintf("pages from %s may not call this API: add the origin to CORS_ALLOW_ORIGINS (the template's CorsOrigins)", origin)})
			return true
		}
		return false // the browser withholds the answer from the page
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "Retry-After, X-Model-Wait, X-Should-Retry")
	if !preflight {
		return false
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
		// OpenAI's SDKs send a dozen x-stainless-* headers of their own.
		h.Set("Access-Control-Allow-Headers", rh)
	}
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
