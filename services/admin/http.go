package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// LogHandler serves GET /logs/{drv} and /logs/{drv}/{attempt} as plain
// text, decompressed and streamed; ?follow=1 keeps a running attempt's log
// open until it ends. The path is parsed here, not by a mux that would
// clean it: anything but a derivation id and an attempt number is refused
// (400) before any file is named, and an unknown one is 404.
func LogHandler(l *Logs, logger zerolog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		id, attempt, err := parseLogPath(r.URL.EscapedPath())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		follow := r.URL.Query().Get("follow")
		if follow != "" && follow != "0" && follow != "1" && follow != "true" && follow != "false" {
			http.Error(w, fmt.Sprintf("follow=%q: want 1 or 0", follow), http.StatusBadRequest)
			return
		}
		flusher, _ := w.(http.Flusher)
		started := false
		err = l.Tail(r.Context(), id, attempt, follow == "1" || follow == "true", func(b []byte) error {
			if !started {
				started = true
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("X-Content-Type-Options", "nosniff")
				w.WriteHeader(http.StatusOK)
				if r.Method == http.MethodHead {
					return errHead
				}
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
			return nil
		})
		switch {
		case err == nil, errors.Is(err, errHead):
			if !started {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusOK)
			}
		case started:
			// The status is sent: the body ends early; the log says why.
			logger.Warn().Err(err).Str("drv", id).Msg("log served in part")
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoLog):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, ErrBadArgument):
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			logger.Error().Err(err).Str("drv", id).Msg("serve log")
			http.Error(w, "cannot read the log: "+err.Error(), http.StatusServiceUnavailable)
		}
	})
}

var errHead = errors.New("HEAD: no body")

// parseLogPath reads /logs/<drv id>[/<attempt>] from an escaped path.
func parseLogPath(p string) (string, uint32, error) {
	rest, ok := strings.CutPrefix(p, "/logs/")
	if !ok {
		return "", 0, fmt.Errorf("path %q: want /logs/<derivation id>[/<attempt>]", p)
	}
	parts := strings.Split(rest, "/")
	if len(parts) > 2 || parts[0] == "" {
		return "", 0, fmt.Errorf("path %q: want /logs/<derivation id>[/<attempt>]", p)
	}
	id := parts[0]
	if !eventlog.ValidToken(id) || strings.ContainsAny(id, ".%\\") {
		return "", 0, fmt.Errorf("derivation id %q: want the hash of its store path", id)
	}
	var attempt uint32
	if len(parts) == 2 {
		n, err := strconv.ParseUint(parts[1], 10, 32)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("attempt %q: want a number from 1", parts[1])
		}
		attempt = uint32(n)
	}
	return id, attempt, nil
}
